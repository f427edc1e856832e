"""get_annots.py on a synthetic capture built to contain every filtering case, and on real cameras."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from interhand_prep.core import dataset, mano, mano_forward
from interhand_prep.core.errors import InputError
from interhand_prep.core.options import AnnotsOptions
from interhand_prep.core.selection import SequenceSelector
from interhand_prep.stages import get_annots as annots

PORTRAIT_WITH_IMAGES = ["400002", "400004", "400016", "400029", "410214", "410219"]


def selector(root: Path, seq: str, **kw) -> SequenceSelector:
    return SequenceSelector(capture=0, seq=seq, basedir=root / "IH", mano_dir=root / "mano", **kw)


def expected_frames(small, seq: str, hands: tuple[str, ...], keep_black: bool = False) -> list[int]:
    """Kept frames derived from the spec: drop black, missing-image and missing-MANO frames."""
    frames = small.frames[seq]
    spec_hands = next(s.hands for s in small.spec["sequences"] if s.name == seq)
    drop = set()
    for offset in small.spec["missing_images"].get(seq, {}):
        drop.add(offset)
    if not keep_black:
        drop.update(small.spec["black"].get(seq, {}))
    for offset, null_hands in small.spec["null_mano"].get(seq, {}).items():
        if set(null_hands) & set(hands):
            drop.add(offset)
    if spec_hands != "both" and any(h != spec_hands for h in hands):
        return []
    return [f for i, f in enumerate(frames) if i not in drop]


@pytest.mark.parametrize("seq,hand_type", [("0051_dinosaur", "right"), ("0266_dh_pray", "both"),
                                           ("0266_dh_pray", "left")])
def test_frame_and_camera_filtering(small, capture, seq, hand_type):
    sel = selector(capture, seq, hand_type=hand_type)
    result = annots.run(sel, progress=False)
    assert result.cameras == PORTRAIT_WITH_IMAGES
    assert result.dropped_cameras.keys() == {"400412"}
    assert result.cameras_without_images == ["410210"]
    assert result.frames == expected_frames(small, seq, sel.fixed_hands)
    layout = sel.layout
    assert layout.read_cams() == PORTRAIT_WITH_IMAGES
    assert layout.read_frames() == result.frames
    # every dropped frame has a reason naming what was wrong
    dropped = result.dropped_frames
    assert set(dropped) == set(small.frames[seq]) - set(result.frames)
    for offset, cams in small.spec["missing_images"].get(seq, {}).items():
        assert dropped[small.frames[seq][offset]] == f"image missing in cam{cams[0]}"
    for offset, cams in small.spec["black"].get(seq, {}).items():
        assert "all black" in dropped[small.frames[seq][offset]]


def test_keep_landscape_and_black_frames(small, capture):
    sel = selector(capture, "0051_dinosaur")
    result = annots.run(sel, AnnotsOptions(keep_landscape=True, keep_black_frames=True), progress=False)
    assert result.cameras == sorted(PORTRAIT_WITH_IMAGES + ["400412"], key=int)
    assert result.frames == expected_frames(small, "0051_dinosaur", ("right",), keep_black=True)


def test_black_frames_only_count_in_rgb_cameras(small, capture):
    # Blacken a frame of a monochrome camera: the frame stays (only RGB cameras are checked).
    seq_dir = capture / "IH/images/train/Capture0/0051_dinosaur"
    frame = small.frames["0051_dinosaur"][6]
    path = seq_dir / "cam410214" / dataset.image_name(frame)
    Image.fromarray(np.zeros((512, 334, 3), np.uint8)).save(path, quality=90)
    result = annots.run(selector(capture, "0051_dinosaur"), progress=False)
    assert frame in result.frames


def test_camera_table_overrides_the_images(capture, tmp_path):
    table = tmp_path / "cams.csv"
    rows = ["cam_ids,portrait,RGB,perfect"] + [f"{c},1,1,1" for c in PORTRAIT_WITH_IMAGES + ["400412"]]
    rows[1] = "400002,0,1,1"  # call a portrait camera landscape
    table.write_text("\n".join(rows) + "\n\n")
    result = annots.run(selector(capture, "0051_dinosaur"), AnnotsOptions(cameras_csv=table), progress=False)
    assert "400002" not in result.cameras and "400412" in result.cameras


def test_probe_tells_mono_landscape_and_black_apart(fixtures_dir, tmp_path):
    real = fixtures_dir / "interhand2.6m_real"
    assert dataset.probe_image(real / "image69148.jpg") == dataset.ImageProbe(334, 512, rgb=True, black=False)
    assert dataset.probe_image(real / "image29590.jpg").rgb is False  # camera 410053 is monochrome
    landscape = dataset.probe_image(real / "image2017.jpg")
    assert (landscape.width, landscape.height, landscape.portrait, landscape.rgb) == (512, 334, False, False)
    Image.fromarray(np.zeros((512, 334, 3), np.uint8)).save(tmp_path / "black.jpg", quality=90)
    assert dataset.is_black(tmp_path / "black.jpg") and not dataset.is_black(real / "image44669.jpg")


def test_annots_contract_and_params_identity(capture):
    sel = selector(capture, "0266_dh_pray", hand_type="both")
    result = annots.run(sel, progress=False)
    layout = sel.layout
    data = np.load(layout.annots, allow_pickle=True).item()
    camera_json = json.loads((capture / "IH/annotations/train/InterHand2.6M_train_camera.json").read_text())["0"]
    assert list(data["cams"]["K"]) == result.cameras
    for cam in result.cameras:
        camrot = np.array(camera_json["camrot"][cam])
        campos = np.array(camera_json["campos"][cam])
        np.testing.assert_allclose(data["cams"]["R"][cam], camrot)
        assert data["cams"]["T"][cam].shape == (3, 1)
        np.testing.assert_allclose(data["cams"]["T"][cam][:, 0], -camrot @ campos)
        K = data["cams"]["K"][cam]
        np.testing.assert_allclose(K[[0, 1], [0, 1]], camera_json["focal"][cam])
        np.testing.assert_allclose(K[:2, 2], camera_json["princpt"][cam])
        np.testing.assert_array_equal(data["cams"]["D"][cam], np.zeros((5, 1)))
    assert len(data["ims"]) == len(result.frames)
    for frame, entry in zip(result.frames, data["ims"]):
        assert entry["ims"] == [f"cam{c}/{dataset.image_name(frame)}" for c in result.cameras]
        assert all((layout.root / p).is_file() for p in entry["ims"])

    for hand in ("right", "left"):
        model = mano.load_mano_model(capture / "mano", hand)
        layer = lambda *a: mano_forward.forward(model, *a)  # noqa: E731
        for frame in result.frames:
            params = np.load(layout.params(hand, frame), allow_pickle=True).item()
            assert {k: v.shape for k, v in params.items()} == {"poses": (1, 48), "Rh": (1, 3), "Th": (1, 3), "shapes": (1, 10)}
            vertices = np.load(layout.vertices(hand, frame))
            assert vertices.shape == (778, 3) and vertices.dtype == np.float32
            np.testing.assert_array_equal(params["poses"][0, :3], 0.0)
            # (vertices - Th) @ Rodrigues(Rh) is the mesh posed with `poses`, no global motion
            R = mano_forward.axis_angle_to_matrix(params["Rh"])[0]
            unposed = (vertices - params["Th"]) @ R
            hand_pose = params["poses"][:, 3:] - model.hands_mean  # the layer adds hands_mean back
            reference = layer(np.concatenate([np.zeros((1, 3)), hand_pose], 1), params["shapes"], np.zeros((1, 3)))
            np.testing.assert_allclose(unposed, reference.vertices[0], atol=1e-5)
        # the vertices are the MANO mesh of the annotation, in world metres
        mano_json = json.loads((capture / "IH/annotations/train/InterHand2.6M_train_MANO_NeuralAnnot.json").read_text())["0"]
        entry = mano_json[str(result.frames[0])][hand]
        direct = layer(np.array([entry["pose"]]), np.array([entry["shape"]]), np.array([entry["trans"]]))
        np.testing.assert_allclose(np.load(layout.vertices(hand, result.frames[0])), direct.vertices[0], atol=1e-6)

        tpose = np.load(layout.tpose_params(hand), allow_pickle=True).item()
        np.testing.assert_allclose(tpose["Rh"], [[0, 0, np.pi / 2]], atol=1e-7)
        np.testing.assert_allclose(tpose["poses"][0], np.concatenate([np.zeros(3), model.hands_mean]), atol=1e-7)
        wrist = direct.joints[0, 0]
        np.testing.assert_allclose(tpose["Th"][0], wrist - mano_forward.axis_angle_to_matrix(tpose["Rh"])[0] @ wrist, atol=1e-6)
        np.testing.assert_allclose(tpose["shapes"][0], entry["shape"], atol=1e-6)


def test_rerun_skips_and_overwrite_redoes(capture):
    sel = selector(capture, "0051_dinosaur")
    first = annots.run(sel, progress=False)
    stamp = sel.layout.annots.stat().st_mtime_ns
    again = annots.run(sel, progress=False)
    assert again.up_to_date and again.frames == first.frames and sel.layout.annots.stat().st_mtime_ns == stamp
    redo = annots.run(sel.replace(overwrite=True), progress=False)
    assert not redo.up_to_date and redo.frames == first.frames
    # recomputed, but identical bytes are not rewritten
    assert redo.written == 0 and sel.layout.annots.stat().st_mtime_ns == stamp
    assert not list(sel.layout.root.rglob("*.tmp")) and not (sel.layout.root / ".lock").exists()


def test_out_root_is_a_complete_data_root(capture, tmp_path):
    out = tmp_path / "out"
    sel = selector(capture, "0266_dh_pray", hand_type="both", out_root=out)
    result = annots.run(sel, progress=False)
    root = out / "train" / "Capture0" / "0266_dh_pray"
    assert sel.layout.root == root
    # nothing was written into the dataset
    assert not (capture / "IH/images/train/Capture0/0266_dh_pray/annots.npy").exists()
    # the output folder alone resolves every image, params and vertices file a trainer opens
    data = np.load(root / "annots.npy", allow_pickle=True).item()
    for entry in data["ims"]:
        for rel in entry["ims"]:
            assert (root / rel).is_file()
            assert not os.path.isabs(os.readlink(root / rel.split("/")[0]))
    for hand in ("right", "left"):
        for frame in result.frames:
            assert (root / "params" / hand / f"{frame}.npy").is_file()
            assert (root / "vertices" / hand / f"{frame}.npy").is_file()
    # moving the output and the dataset together keeps the links working
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(str(capture / "IH"), moved / "IH")
    shutil.move(str(out), moved / "out")
    assert (moved / "out/train/Capture0/0266_dh_pray" / data["ims"][0]["ims"][0]).is_file()


def test_real_cameras_project_real_joints_into_their_bboxes(fixtures_dir, synthetic_root, tmp_path):
    """Build a one-image-per-sequence tree from the real fixture and check the produced K, R, T."""
    real = fixtures_dir / "interhand2.6m_real"
    coco = json.loads((real / "test_interhand2.6m_data.json").read_text())
    joints = json.loads((real / "test_interhand2.6m_joint_3d.json").read_text())
    basedir = tmp_path / "IH"
    mano_json = {}
    zero = {"pose": [0.0] * 48, "shape": [0.0] * 10, "trans": [0.0, 0.0, 1.0]}
    for im in coco["images"]:
        cam_dir = basedir / "images/test" / f"Capture{im['capture']}" / im["seq_name"] / f"cam{im['camera']}"
        cam_dir.mkdir(parents=True)
        shutil.copy(real / im["file_name"], cam_dir / dataset.image_name(im["frame_idx"]))
        mano_json.setdefault(str(im["capture"]), {})[str(im["frame_idx"])] = {"right": zero, "left": zero}
    ann_dir = basedir / "annotations/test"
    ann_dir.mkdir(parents=True)
    shutil.copy(real / "test_interhand2.6m_camera.json", ann_dir / "InterHand2.6M_test_camera.json")
    (ann_dir / "InterHand2.6M_test_MANO_NeuralAnnot.json").write_text(json.dumps(mano_json))

    checked = 0
    for im, ann in zip(coco["images"], coco["annotations"]):
        sel = SequenceSelector(capture=im["capture"], seq=im["seq_name"], split="test", basedir=basedir,
                               mano_dir=synthetic_root / "mano", out_root=tmp_path / "out")
        result = annots.run(sel, AnnotsOptions(keep_landscape=True), progress=False)
        assert result.cameras == [im["camera"]] and result.frames == [im["frame_idx"]]
        cams = sel.layout.read_cameras()
        record = joints[str(im["capture"])][str(im["frame_idx"])]
        world = np.array(record["world_coord"])
        valid = np.array(record["joint_valid"]).ravel().astype(bool)
        pixels, depth = cams.project(world[valid])
        x, y, w, h = ann["bbox"]
        assert (depth > 0).all()
        inside = (pixels[0, :, 0] >= x) & (pixels[0, :, 0] <= x + w) & (pixels[0, :, 1] >= y) & (pixels[0, :, 1] <= y + h)
        assert inside.all(), f"image {im['file_name']}: {np.count_nonzero(~inside)} joints outside the bbox"
        checked += valid.sum()
        # the portrait filter follows the image itself
        portrait = annots.run(SequenceSelector(capture=im["capture"], seq=im["seq_name"], split="test", basedir=basedir,
                                               mano_dir=synthetic_root / "mano", out_root=tmp_path / "out2"),
                              progress=False) if im["width"] < im["height"] else None
        if portrait is not None:
            assert portrait.cameras == [im["camera"]]
    assert checked > 40


def test_landscape_only_sequence_is_a_clear_error(fixtures_dir, synthetic_root, tmp_path):
    real = fixtures_dir / "interhand2.6m_real"
    cam_dir = tmp_path / "IH/images/test/Capture4/0007_thumbup_normal/cam410028"
    cam_dir.mkdir(parents=True)
    shutil.copy(real / "image2017.jpg", cam_dir / "image2017.jpg")
    (tmp_path / "IH/annotations/test").mkdir(parents=True)
    shutil.copy(real / "test_interhand2.6m_camera.json", tmp_path / "IH/annotations/test/InterHand2.6M_test_camera.json")
    with pytest.raises(InputError, match="no camera left after filtering"):
        annots.run(SequenceSelector(capture=4, seq="0007_thumbup_normal", split="test", basedir=tmp_path / "IH",
                                    mano_dir=synthetic_root / "mano"), progress=False)


@pytest.mark.parametrize("case,message", [
    ("capture", r"Capture7: capture folder not found; found Capture0"),
    ("sequence", r"0999_nothing: sequence folder not found; Capture0 has 0051_dinosaur, 0266_dh_pray"),
    ("camera_json", r"InterHand2.6M_train_camera.json: annotation file not found"),
    ("mano_json", r"InterHand2.6M_train_MANO_NeuralAnnot.json: not valid JSON"),
    ("mano_model", r"MANO_RIGHT.pkl: MANO model not found; download the MANO model"),
    ("camera_params", r"no parameters for camera\(s\) cam400002"),
])
def test_clear_errors(capture, case, message):
    sel = selector(capture, "0051_dinosaur")
    ann = capture / "IH/annotations/train"
    if case == "capture":
        sel = sel.replace(capture=7)
    elif case == "sequence":
        sel = sel.replace(seq="0999_nothing")
    elif case == "camera_json":
        (ann / "InterHand2.6M_train_camera.json").unlink()
    elif case == "mano_json":
        path = ann / "InterHand2.6M_train_MANO_NeuralAnnot.json"
        path.write_bytes(path.read_bytes()[:1000])
    elif case == "mano_model":
        (capture / "mano/MANO_RIGHT.pkl").unlink()
    elif case == "camera_params":
        path = ann / "InterHand2.6M_train_camera.json"
        data = json.loads(path.read_text())
        for field in data["0"].values():
            del field["400002"]
        path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=message):
        annots.run(sel, progress=False)
    assert not sel.layout.annots.exists()


def test_cli_reports_one_line_and_exit_status(repo, capture):
    cmd = [sys.executable, str(repo / "get_annots.py"), "--capture", "0", "--seq", "0999_nothing",
           "--basedir", str(capture / "IH"), "--mano_dir", str(capture / "mano"), "--hand_type", "right"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=repo)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("get_annots.py: error: ") and "0999_nothing" in proc.stderr

    ok = subprocess.run(cmd[:5] + ["0051_dinosaur"] + cmd[6:] + ["--clear_existed", "--quiet"],
                        capture_output=True, text=True, cwd=repo)
    assert ok.returncode == 0, ok.stderr
    assert "frames:" in ok.stdout and "kept" in ok.stdout


def test_every_dropped_frame_is_listed_in_the_summary():
    from interhand_prep.core.layout import SequenceLayout

    result = annots.AnnotsResult(layout=SequenceLayout("seq"), hands=("right",), frames=[1, 2],
                                 dropped_frames={3: "a", 4: "a", 5: "a", 9: "a", 7: "b"})
    text = result.summary()
    assert "4 x a: frames 3-5, 9" in text and "1 x b: frame 7" in text
    assert annots.frame_ranges([]) == "" and annots.frame_ranges([1, 3, 4]) == "1, 3-4"


def test_the_generator_is_deterministic(tmp_path):
    from interhand_prep.synthetic.capture import CaptureSpec, SequenceSpec, generate_capture

    def make(root):
        spec = CaptureSpec(capture=0, seed=21, camera_ids=["400002", "410214", "400412"], image_scale=0.25,
                           sequences=[SequenceSpec("0001_test", "both", 3)], default_cases=False)
        generate_capture(root / "IH", root / "mano", spec)
        return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    first, second = make(tmp_path / "a"), make(tmp_path / "b")
    assert first.keys() == second.keys() and len(first) > 10
    assert all(first[k] == second[k] for k in first)
