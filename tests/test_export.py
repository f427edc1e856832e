"""export: nerfstudio's transforms.json and EasyMocap's intri.yml / extri.yml.

Each trainer's convention is written out plainly in these tests (not taken from the package), and
the vertices of every hand are projected through the exported cameras and through annots.npy:
the two must agree within 1e-3 px.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess

import numpy as np
import pytest
from PIL import Image

from interhand_prep.core.cameras import CameraSet
from interhand_prep.core.errors import InputError
from interhand_prep.core.layout import SequenceLayout
from interhand_prep.core.options import ExportOptions, RenderOptions
from interhand_prep.core.trainer_formats import easymocap_extri, easymocap_intri, nerfstudio_transforms
from interhand_prep.stages import export as export_stage

TWO = "0266_dh_pray"
TOLERANCE_PX = 1e-3


def _annots_projection(annots: dict, cam: str, points_m: np.ndarray) -> np.ndarray:
    """The contract of annots.npy: X_cam = R @ X_mm + T (mm), pixel = K @ X_cam / z, pixel
    centres at integers (OpenCV)."""
    K, R, T = (np.asarray(annots["cams"][k][cam], dtype=np.float64) for k in ("K", "R", "T"))
    x = points_m * 1000.0 @ R.T + T.reshape(1, 3)
    uv = x @ K.T
    return uv[:, :2] / uv[:, 2:3]


def _nerfstudio_projection(view: dict, points_m: np.ndarray) -> np.ndarray:
    """nerfstudio: transform_matrix is camera-to-world in metres with OpenGL camera axes (x right,
    y up, z back); the ray of pixel (i, j) leaves through (i + 0.5, j + 0.5) at direction
    ((u - cx) / fx, -(v - cy) / fy, -1). Inverted: u = cx + fx * x / -z, v = cy - fy * y / -z.
    Returns pixel coordinates with centres at integers, as annots.npy has them (u - 0.5)."""
    c2w = np.asarray(view["transform_matrix"], dtype=np.float64)
    rotation, origin = c2w[:3, :3], c2w[:3, 3]
    local = (points_m - origin) @ rotation  # world -> camera: rotation.T @ (X - origin)
    depth = -local[:, 2]
    u = view["cx"] + view["fl_x"] * local[:, 0] / depth
    v = view["cy"] - view["fl_y"] * local[:, 1] / depth
    return np.stack([u, v], axis=1) - 0.5


def _rodrigues(rvec: np.ndarray) -> np.ndarray:
    """Axis-angle (3,) -> 3x3 rotation, as cv2.Rodrigues: I + sin(t) K + (1 - cos(t)) K^2."""
    theta = np.linalg.norm(rvec)
    k = rvec / theta
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * K + (1 - np.cos(theta)) * K @ K


def _read_yaml_matrices(text: str) -> tuple[list[str], dict[str, np.ndarray]]:
    """A small reader of FileStorage YAML (names and !!opencv-matrix entries), for machines
    without OpenCV; test_easymocap_yaml_reads_back_with_opencv checks the files with OpenCV."""
    names = re.findall(r'^\s+- "([^"]+)"$', text, flags=re.M)
    matrices = {}
    for key, rows, cols, data in re.findall(r"^(\w+): !!opencv-matrix\n\s+rows: (\d+)\n\s+cols: (\d+)\n\s+dt: d\n"
                                            r"\s+data: \[([^\]]*)\]", text, flags=re.M):
        matrices[key] = np.array([float(v) for v in data.split(",")]).reshape(int(rows), int(cols))
    return names, matrices


def _easymocap_projection(intri: dict, extri: dict, cam: str, points_m: np.ndarray) -> np.ndarray:
    """EasyMocap's read_camera: R = Rodrigues(R_<id>), X_cam = R @ X + T_<id> (metres),
    pixel = K_<id> @ X_cam / z with OpenCV's pixel centres (dist_<id> zero)."""
    R = _rodrigues(extri[f"R_{cam}"].ravel())
    x = points_m @ R.T + extri[f"T_{cam}"].reshape(1, 3)
    uv = x @ intri[f"K_{cam}"].T
    return uv[:, :2] / uv[:, 2:3]


@pytest.fixture
def processed(tiny, helpers):
    """The two-hand tiny sequence, processed with both hands."""
    sel = helpers.selector(tiny, TWO, hand_type="both")
    helpers.run_stages(sel)
    return sel


def _hand_vertices(layout: SequenceLayout, frame: int) -> np.ndarray:
    return np.concatenate([np.load(layout.vertices(h, frame)) for h in ("right", "left")
                           if layout.vertices(h, frame).is_file()])


def test_nerfstudio_export_projects_like_annots(processed):
    result = export_stage.export(processed, ExportOptions(format="nerfstudio"), progress=False)
    layout = processed.layout
    out = layout.root / "export" / "nerfstudio"
    assert result.dest == out.resolve() and not result.up_to_date
    meta = json.loads((out / "transforms.json").read_text())
    # what nerfstudio's parser needs: camera_model, and per-frame intrinsics (none fixed on top)
    assert meta["camera_model"] == "OPENCV"
    assert not {"fl_x", "fl_y", "cx", "cy", "w", "h"} & set(meta)
    annots = np.load(layout.annots, allow_pickle=True).item()
    cams, frames = layout.read_cams(), layout.read_frames()
    assert len(meta["frames"]) == len(cams) * len(frames)
    names = [v["file_path"] for v in meta["frames"]]
    assert names == sorted(names)  # nerfstudio sorts the views by file name
    seen = set()
    for view in meta["frames"]:
        cam, frame = view["camera"], view["frame"]
        seen.add((cam, frame))
        assert view["file_path"] == f"images/{cam}/{frame:06d}.jpg"
        image = out / view["file_path"]
        assert image.is_symlink() and not os.path.isabs(os.readlink(image))
        assert image.resolve() == layout.image(cam, frame).resolve()
        assert (view["w"], view["h"]) == Image.open(image).size
        assert all(view[k] == 0.0 for k in ("k1", "k2", "p1", "p2"))
        c2w = np.asarray(view["transform_matrix"])
        assert c2w.shape == (4, 4) and np.allclose(c2w[3], [0, 0, 0, 1])
        assert np.allclose(c2w[:3, :3] @ c2w[:3, :3].T, np.eye(3), atol=1e-9)
        vertices = _hand_vertices(layout, frame)
        error = np.abs(_nerfstudio_projection(view, vertices) - _annots_projection(annots, cam, vertices)).max()
        assert error < TOLERANCE_PX, (cam, frame, error)
        # masks: the rendered 0/100/200 labels themselves (nerfstudio keeps pixels that are non-zero)
        mask = np.asarray(Image.open(out / view["mask_path"]))
        assert np.array_equal(mask, np.asarray(Image.open(layout.mask(cam, frame))))
        # depth: float32 (H, W) millimetres; nerfstudio multiplies by 1e-3 to get metres
        depth_mm = np.load(out / view["depth_file_path"])
        assert depth_mm.dtype == np.float32 and depth_mm.shape == (view["h"], view["w"])
        depth_m = np.load(layout.depth(cam, frame))[..., 0]
        assert np.allclose(depth_mm * 1e-3, depth_m, rtol=1e-6, atol=0)
        assert ((depth_mm > 0) == (mask > 0)).all()
        z_mm = (vertices * 1000.0) @ np.asarray(annots["cams"]["R"][cam])[2] + float(annots["cams"]["T"][cam][2, 0])
        if mask.any():  # a visible surface lies between the nearest and farthest vertex
            assert z_mm.min() - 1 <= depth_mm[mask > 0].min() and depth_mm.max() <= z_mm.max() + 1
    assert seen == {(c, f) for c in cams for f in frames}


def test_easymocap_export_projects_like_annots(processed):
    export_stage.export(processed, ExportOptions(format="easymocap"), progress=False)
    layout = processed.layout
    out = layout.root / "export" / "easymocap"
    names_i, intri = _read_yaml_matrices((out / "intri.yml").read_text())
    names_e, extri = _read_yaml_matrices((out / "extri.yml").read_text())
    cams, frames = layout.read_cams(), layout.read_frames()
    assert names_i == names_e == cams
    annots = np.load(layout.annots, allow_pickle=True).item()
    for cam in cams:
        assert intri[f"dist_{cam}"].shape == (1, 5) and not intri[f"dist_{cam}"].any()
        assert extri[f"R_{cam}"].shape == extri[f"T_{cam}"].shape == (3, 1)
        assert np.allclose(_rodrigues(extri[f"R_{cam}"].ravel()), extri[f"Rot_{cam}"], atol=1e-9)
        for frame in frames:
            vertices = _hand_vertices(layout, frame)
            error = np.abs(_easymocap_projection(intri, extri, cam, vertices)
                           - _annots_projection(annots, cam, vertices)).max()
            assert error < TOLERANCE_PX, (cam, frame, error)
            image, mask = out / "images" / cam / f"{frame:06d}.jpg", out / "masks" / cam / f"{frame:06d}.png"
            assert image.resolve() == layout.image(cam, frame).resolve()
            assert mask.resolve() == layout.mask(cam, frame).resolve()


def test_easymocap_yaml_reads_back_with_opencv(processed):
    cv2 = pytest.importorskip("cv2")
    export_stage.export(processed, ExportOptions(format="easymocap"), progress=False)
    out = processed.layout.root / "export" / "easymocap"
    cameras = processed.layout.read_cameras()
    intri = cv2.FileStorage(str(out / "intri.yml"), cv2.FILE_STORAGE_READ)
    extri = cv2.FileStorage(str(out / "extri.yml"), cv2.FILE_STORAGE_READ)
    for storage in (intri, extri):
        node = storage.getNode("names")
        assert [node.at(i).string() for i in range(node.size())] == cameras.ids
    for c, cam in enumerate(cameras.ids):
        assert np.array_equal(intri.getNode(f"K_{cam}").mat(), cameras.K[c])
        assert intri.getNode(f"dist_{cam}").mat().shape == (1, 5)
        width, height = Image.open(processed.layout.image(cam, processed.layout.read_frames()[0])).size
        assert (intri.getNode(f"W_{cam}").real(), intri.getNode(f"H_{cam}").real()) == (width, height)
        rotation = cv2.Rodrigues(extri.getNode(f"R_{cam}").mat())[0]
        assert np.allclose(rotation, cameras.R[c], atol=1e-9)
        assert np.array_equal(extri.getNode(f"Rot_{cam}").mat(), cameras.R[c])
        assert np.allclose(extri.getNode(f"T_{cam}").mat().ravel() * 1000.0, cameras.T[c], rtol=0, atol=1e-9)


def test_real_cameras_project_the_real_joints_alike_in_every_format(fixtures_dir):
    """The real camera table (camrot orthonormal only up to float noise) and real 3D joints."""
    real = fixtures_dir / "interhand2.6m_real"
    camera_table = json.loads((real / "test_interhand2.6m_camera.json").read_text())
    joints = json.loads((real / "test_interhand2.6m_joint_3d.json").read_text())
    checked = 0
    for capture, entry in camera_table.items():
        cameras = CameraSet.from_interhand(entry)
        for frame, record in joints[capture].items():
            world_m = np.asarray(record["world_coord"], dtype=np.float64)[np.asarray(record["joint_valid"]).ravel() > 0] / 1000.0
            annots = {"cams": {"K": dict(zip(cameras.ids, cameras.K)), "R": dict(zip(cameras.ids, cameras.R)),
                               "T": dict(zip(cameras.ids, cameras.T.reshape(-1, 3, 1)))}}
            sizes = [(334, 512)] * len(cameras.ids)
            transforms = nerfstudio_transforms(cameras, sizes, [int(frame)], lambda c, f: {"file_path": f"{c}.jpg"})
            _, intri = _read_yaml_matrices(easymocap_intri(cameras, sizes))
            _, extri = _read_yaml_matrices(easymocap_extri(cameras))
            for view in transforms["frames"]:
                cam = view["camera"]
                expected = _annots_projection(annots, cam, world_m)
                assert np.abs(_nerfstudio_projection(view, world_m) - expected).max() < TOLERANCE_PX
                assert np.abs(_easymocap_projection(intri, extri, cam, world_m) - expected).max() < TOLERANCE_PX
                checked += len(world_m)
    assert checked > 40


def test_unfinished_sequence_is_one_line_naming_what_is_missing(tiny, helpers):
    sel = helpers.selector(tiny, TWO, hand_type="both")
    args = ["--capture", "0", "--seq", TWO, "--basedir", str(tiny / "IH"), "--format", "nerfstudio"]
    before = helpers.state(sel.layout.root)
    run = helpers.script("export.py", *args)
    assert run.returncode == 2 and run.stderr.count("\n") == 1
    assert "annots.npy is missing" in run.stderr and "Traceback" not in run.stderr
    from interhand_prep.stages import get_annots

    get_annots.run(sel, progress=False)
    run = helpers.script("export.py", *args)
    assert run.returncode == 2 and "render_mesh has not finished" in run.stderr and run.stderr.count("\n") == 1
    assert not (sel.layout.root / "export").exists()
    assert set(helpers.state(sel.layout.root)) >= set(before)


def test_a_missing_mask_is_named(processed, helpers):
    layout = processed.layout
    cam, frame = layout.read_cams()[1], layout.read_frames()[2]
    layout.mask(cam, frame).unlink()
    with pytest.raises(InputError, match=re.escape(str(layout.mask(cam, frame)))):
        export_stage.export(processed, ExportOptions(format="easymocap"), progress=False)


def test_rerun_replacement_and_interruption(processed, helpers, monkeypatch):
    layout = processed.layout
    out = layout.root / "export" / "nerfstudio"
    export_stage.export(processed, ExportOptions(format="nerfstudio"), progress=False)
    first = helpers.state(out)
    sources = helpers.state(layout.root / "mask")
    # the same options on an unchanged sequence: nothing is touched
    again = export_stage.export(processed, ExportOptions(format="nerfstudio"), progress=False)
    assert again.up_to_date and helpers.state(out) == first
    # other options: the folder is replaced whole (copies now, no link left)
    export_stage.export(processed, ExportOptions(format="nerfstudio", copy=True), progress=False)
    images = list((out / "images").rglob("*.jpg"))
    assert images and not any(p.is_symlink() for p in images)
    assert not any(p.is_symlink() for p in out.rglob("*"))
    assert json.loads((out / "export.json").read_text())["recipe"]["copy"] is True
    assert sorted(p.name for p in out.parent.iterdir()) == ["nerfstudio"]  # no temporary left
    umask = os.umask(0)
    os.umask(umask)
    for path in [out, *out.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o777 if path.is_dir() else 0o666) & ~umask, path
    copied = helpers.state(out)

    # interrupted half-way: the previous export stays whole and the temporary folder goes
    def half_then_fail(source, export_layout, copy, tick):
        export_stage.WRITERS["easymocap"](source, export_layout, copy, tick)
        raise KeyboardInterrupt

    monkeypatch.setitem(export_stage.WRITERS, "nerfstudio", half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        export_stage.export(processed, ExportOptions(format="nerfstudio"), progress=False)
    assert helpers.state(out) == copied
    assert sorted(p.name for p in out.parent.iterdir()) == ["nerfstudio"]
    assert helpers.state(layout.root / "mask") == sources  # the sources are never rewritten


def test_relative_links_survive_moving_the_dataset(processed, tmp_path):
    export_stage.export(processed, ExportOptions(format="easymocap"), progress=False)
    moved = tmp_path / "moved"
    shutil.move(str(tmp_path / "IH"), str(moved))
    out = SequenceLayout(moved / processed.layout.root.relative_to(tmp_path / "IH")).export_dir("easymocap")
    links = list((out / "images").rglob("*.jpg")) + list((out / "masks").rglob("*.png"))
    assert links and all(p.is_symlink() and p.exists() for p in links)


def test_out_refuses_a_folder_that_is_not_an_export(processed, tmp_path, helpers):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="holds no export of this tool"):
        export_stage.export(processed, ExportOptions(format="easymocap", out=precious), progress=False)
    assert (precious / "notes.txt").read_text() == "keep me" and len(list(precious.iterdir())) == 1
    elsewhere = tmp_path / "exports" / "seq"
    run = helpers.script("export.py", "--capture", "0", "--seq", TWO, "--basedir", str(tmp_path / "IH"),
                         "--format", "easymocap", "--out", str(elsewhere), "--quiet")
    assert run.returncode == 0, run.stderr
    assert str(elsewhere) in run.stdout and "easymocap export of" in run.stdout
    link = next((elsewhere / "images").rglob("*.jpg"))
    assert not os.path.isabs(os.readlink(link)) and link.exists()


def test_a_damaged_export_is_rebuilt(processed):
    options = ExportOptions(format="nerfstudio")
    export_stage.export(processed, options, progress=False)
    out = processed.layout.root / "export" / "nerfstudio"
    (out / "transforms.json").unlink()
    link = next((out / "images").rglob("*.jpg"))
    link.unlink()
    result = export_stage.export(processed, options, progress=False)
    assert not result.up_to_date
    assert (out / "transforms.json").is_file() and link.is_symlink() and link.exists()


def test_masks_of_changed_meshes_or_cameras_are_not_exported(processed, gl_platform):
    from interhand_prep.stages import render_mesh

    layout = processed.layout
    frame = layout.read_frames()[1]
    vertices = np.load(layout.vertices("left", frame))
    np.save(layout.vertices("left", frame), vertices + np.float32(0.01))  # as a get_annots rerun would
    with pytest.raises(InputError, match=f"out of date .*frame {frame} changed.*run render_mesh.py"):
        export_stage.export(processed, ExportOptions(format="easymocap"), progress=False)
    render_mesh.run(processed, RenderOptions(backend=gl_platform, render_workers=1), progress=False)  # redoes it
    assert not export_stage.export(processed, ExportOptions(format="easymocap"), progress=False).up_to_date
    annots = layout.read_annots()
    cam = layout.read_cams()[0]
    annots["cams"]["K"][cam] = annots["cams"]["K"][cam] * 1.01
    layout.write_annots_dict(annots)
    with pytest.raises(InputError, match=f"camera {cam} changed"):
        export_stage.export(processed, ExportOptions(format="easymocap"), progress=False)


def test_png16_depth_is_exported_in_millimetres(tiny, helpers):
    from interhand_prep.stages import pipeline

    sel = helpers.selector(tiny, TWO, hand_type="both")
    helpers.run_stages(sel, pipeline.StageOptions(render=RenderOptions(depth_format="png16")))
    export_stage.export(sel, ExportOptions(format="nerfstudio"), progress=False)
    out = sel.layout.root / "export" / "nerfstudio"
    views = json.loads((out / "transforms.json").read_text())["frames"]
    for view in views[:6]:
        units = np.asarray(Image.open(sel.layout.depth(view["camera"], view["frame"], "png16"))).astype(np.float64)
        depth_mm = np.load(out / view["depth_file_path"])
        assert np.allclose(depth_mm, units / 10.0, rtol=1e-6, atol=1e-4)  # png16: 0.1 mm units


def test_a_misspelt_sequence_names_the_closest(processed):
    with pytest.raises(InputError, match=f"no such sequence folder.*closest: {TWO}"):
        export_stage.export(processed.replace(seq="0266_dh_prey"), ExportOptions(format="nerfstudio"), progress=False)


def test_leftovers_of_a_killed_export_go_and_others_stay(processed):
    export_dir = processed.layout.root / "export"
    killed = export_dir / ".nerfstudio.abcd1234.tmp"
    another = export_dir / ".nerfstudio.v2.abcd1234.tmp"  # an export to a folder named "nerfstudio.v2"
    for folder in (killed, another):
        (folder / "images").mkdir(parents=True)
    export_stage.export(processed, ExportOptions(format="nerfstudio"), progress=False)
    assert not killed.exists() and another.is_dir()


@pytest.mark.slow
def test_the_demo_names_an_export_command_that_runs(tiny, helpers, gl_platform, tmp_path):
    import shlex
    import sys

    spaced = tmp_path / "my data"
    spaced.mkdir()
    shutil.move(str(tiny / "IH"), str(spaced / "IH"))
    run = helpers.script("process.sh", "--demo", "--basedir", str(spaced / "IH"), "--mano-dir", str(tiny / "mano"),
                         "--logs", str(tmp_path / "logs"), "--backend", gl_platform, "--quiet", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    hint = run.stdout.strip().splitlines()[-1]
    command = shlex.split(hint)
    assert command[0] == "interhand-prep"
    export = subprocess.run([sys.executable, "-m", "interhand_prep", *command[1:], "--quiet"], capture_output=True,
                            text=True, cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    assert "nerfstudio export of" in export.stdout
