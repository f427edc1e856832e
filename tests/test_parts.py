"""Part labels (core/parts.py, render_mesh --parts): the table against facts not derived from it,
the rendered labels against the CPU ray cast of conftest, and the part images through reruns,
check-seq, merge-seq, export and gif."""

from __future__ import annotations

import json

import numpy as np
import pytest

from interhand_prep.core import parts
from interhand_prep.core.layout import decode_mask
from interhand_prep.core.mano import load_mano_model
from interhand_prep.core.options import BlendWeightOptions, RenderOptions
from interhand_prep.synthetic import hand as synthetic_hand
from interhand_prep.stages import get_annots, prepare_blend_weights, render_mesh

# smplx's vertex_ids["mano"]: the fingertip vertex of each finger in the official topology, and the
# MANO joint of its distal bone
SECOND = "0268_dh_clap"
FINGERTIPS = {"thumb": (744, 15), "index": (320, 3), "middle": (443, 6), "ring": (554, 12), "little": (671, 9)}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mano")
    synthetic_hand.write_synthetic_mano(folder)
    return {hand: load_mano_model(folder, hand) for hand in ("right", "left")}


def test_fingertips_are_in_the_distal_part_of_their_finger(models):
    for hand, model in models.items():
        vertex_part = parts.vertex_parts(model.weights)
        for finger, (vertex, joint) in FINGERTIPS.items():
            assert vertex_part[vertex] == joint, f"{hand} {finger} tip {vertex}: joint {vertex_part[vertex]}"
        assert set(np.unique(vertex_part)) == set(range(16)), "every part has vertices"
        assert set(np.unique(parts.face_parts(model.faces, vertex_part))) == set(range(16)), "every part has faces"
    assert (parts.vertex_parts(models["left"].weights) == parts.vertex_parts(models["right"].weights)).all()


def test_face_rule_majority_then_lowest_joint():
    vertex_part = np.array([3, 3, 5, 7, 2])
    faces = np.array([[0, 1, 2],   # two in 3 -> 3
                      [2, 0, 1],   # order does not matter -> 3
                      [2, 3, 4],   # all different -> the lowest, 2
                      [3, 2, 2]])  # two in 5 -> 5
    assert parts.face_parts(faces, vertex_part).tolist() == [3, 3, 2, 5]
    weights = np.array([[0.2, 0.4, 0.4] + [0.0] * 13, [0.0] * 15 + [1.0]])
    assert parts.vertex_parts(weights).tolist() == [1, 15]  # equal largest weights: the lower joint


def test_table_labels_hands_and_json():
    table = parts.PART_TABLE
    assert [row["label"] for row in table] == list(range(33))
    for row in table[1:]:
        assert row["label"] == (1 if row["hand"] == "right" else 17) + row["joint"]
        assert parts.parts_to_mask(np.array([[row["label"]]], np.uint8))[0, 0] == (200 if row["hand"] == "right" else 100)
    assert len({tuple(row["color"]) for row in table}) == 33, "every label has its own colour"
    assert json.loads(parts.parts_json())["parts"] == [dict(row) for row in table]
    assert parts.parts_to_mask(np.array([[0, 33, 255]], np.uint8)).tolist() == [[0, 0, 0]]


@pytest.fixture(scope="module")
def parted(tmp_path_factory, gl_platform):
    """Two-hand sequence (hands occluding each other), rendered without and then with --parts; a
    second one (SECOND) annotated and rendered without parts."""
    from interhand_prep.core.selection import SequenceSelector
    from interhand_prep.synthetic.capture import CaptureSpec, SequenceSpec, generate_capture

    root = tmp_path_factory.mktemp("parts")
    seq = "0266_dh_pray"
    spec = CaptureSpec(capture=0, seed=11, camera_ids=["400002", "400016", "410214", "400412"],
                       sequences=[SequenceSpec(seq, "both", 3), SequenceSpec(SECOND, "both", 2)], default_cases=False,
                       image_scale=0.25)
    generate_capture(root / "IH", root / "mano", spec)
    sel = SequenceSelector(capture=0, seq=seq, basedir=root / "IH", mano_dir=root / "mano", hand_type="both")
    get_annots.run(sel, progress=False)
    render_mesh.run(sel, RenderOptions(backend=gl_platform, render_workers=1), progress=False)
    layout = sel.layout
    plain = {p.relative_to(layout.root): p.read_bytes() for p in (layout.root / "mask").rglob("*.png")}
    result = render_mesh.run(sel, RenderOptions(backend=gl_platform, render_workers=1, parts=True), progress=False)
    second = sel.replace(seq=SECOND)
    get_annots.run(second, progress=False)
    render_mesh.run(second, RenderOptions(backend=gl_platform, render_workers=1), progress=False)
    return sel, plain, result, gl_platform


def test_part_labels_match_the_ray_cast(parted, helpers):
    sel, _, _, platform = parted
    layout = sel.layout
    table = {hand: parts.face_parts(m.faces, parts.vertex_parts(m.weights))
             for hand, m in ((h, load_mano_model(sel.mano_dir, h)) for h in ("right", "left"))}
    agree = pixels = 0
    for cam in layout.read_cams():
        for frame in layout.read_frames():
            labels = decode_mask(layout.parts(cam, frame))
            height, width = labels.shape
            hand_label, _, _, face = helpers.ray_cast(layout, sel.mano_dir, cam, frame, width, height, with_faces=True)
            expected = np.zeros_like(labels)
            for hand, value in (("right", 200), ("left", 100)):
                hit = hand_label == value
                expected[hit] = parts.FIRST_LABEL[hand] + table[hand][face[hit]]
            hand_pixels = (labels > 0) | (expected > 0)
            same = labels == expected
            pixels += int(hand_pixels.sum())
            agree += int((same & hand_pixels).sum())
            # every disagreement is on the silhouette or between two parts: a neighbour shows the other answer
            for y, x in zip(*np.nonzero(hand_pixels & ~same)):
                around = (slice(max(y - 1, 0), y + 2), slice(max(x - 1, 0), x + 2))
                assert (labels[around] == expected[y, x]).any() or (expected[around] == labels[y, x]).any(), \
                    f"cam{cam} frame {frame} pixel ({x}, {y}): {labels[y, x]} against {expected[y, x]}"
    assert pixels > 2000
    assert agree / pixels >= 0.999, f"{agree} of {pixels} hand pixels agree"


def test_union_of_parts_is_the_mask_and_hands_never_mix(parted):
    sel, plain, result, _ = parted
    layout = sel.layout
    assert result.rendered == len(plain) and result.parts
    seen = set()
    for rel, data in plain.items():
        assert (layout.root / rel).read_bytes() == data, f"{rel}: the mask changed with --parts"
        cam, frame = rel.parent.name[3:], int(rel.stem[5:])
        labels = decode_mask(layout.parts(cam, frame))
        mask = decode_mask(layout.mask(cam, frame))
        assert labels.dtype == np.uint8 and labels.max() <= 32
        assert (parts.parts_to_mask(labels) == mask).all()
        assert ((labels >= 17) == (mask == 100)).all() and (((labels >= 1) & (labels <= 16)) == (mask == 200)).all()
        seen |= set(np.unique(labels).tolist())
    assert {1, 17} <= seen and len(seen) > 20
    assert json.loads(layout.parts_json.read_text())["parts"][5]["name"] == "right middle proximal"


def test_parts_on_off_and_reruns(parted):
    sel, _, _, platform = parted
    layout = sel.layout
    opts = RenderOptions(backend=platform, render_workers=1, parts=True)
    again = render_mesh.run(sel, opts, progress=False)
    assert again.up_to_date and again.rendered == 0
    one = layout.parts(layout.read_cams()[0], layout.read_frames()[0])
    one.unlink()
    redo = render_mesh.run(sel, opts, progress=False)
    assert redo.rendered == 1 and one.is_file()
    mask_times = {p: p.stat().st_mtime_ns for p in (layout.root / "mask").rglob("*.png")}
    off = render_mesh.run(sel, RenderOptions(backend=platform, render_workers=1), progress=False)
    assert off.rendered == 0 and not (layout.root / "parts").exists() and not layout.parts_json.exists()
    assert {p: p.stat().st_mtime_ns for p in mask_times} == mask_times, "turning --parts off renders nothing"
    on = render_mesh.run(sel, opts, progress=False)
    assert on.rendered == len(mask_times) and layout.parts_json.is_file()


def test_prepare_blend_weights_writes_the_vertex_table(tiny, helpers):
    sel = helpers.selector(tiny, hand_type="both")
    get_annots.run(sel, progress=False)
    prepare_blend_weights.run(sel, BlendWeightOptions(), progress=False)
    for hand in ("right", "left"):
        table = np.load(sel.layout.lbs_file(hand, "parts"))
        weights = load_mano_model(sel.mano_dir, hand).weights  # float64, as in the model file
        assert table.dtype == np.int64 and table.shape == (778,)
        assert (table == np.argmax(weights, axis=1)).all()
        assert (weights[np.arange(778), table] == weights.max(axis=1)).all()


def test_check_seq_passes_parts_and_finds_wrong_ones(parted, tmp_path):
    import shutil

    from interhand_prep.core.layout import encode_mask
    from interhand_prep.stages.check_seq import check_sequence

    sel, _, _, _ = parted
    prepare_blend_weights.run(sel, BlendWeightOptions(), progress=False)
    copy = tmp_path / "seq"
    shutil.copytree(sel.layout.root, copy, symlinks=True)
    report = check_sequence(copy, sel.mano_dir)
    assert report.ok, report.summary()
    assert report.counts["part samples"] > 500
    from interhand_prep.core.layout import SequenceLayout

    layout = SequenceLayout(copy)
    cams, frames = layout.read_cams(), layout.read_frames()
    # 1. the right hand's labels moved one joint along (index proximal shown as index middle, ...):
    #    the union is still the mask, only the meshes tell
    path = layout.parts(cams[0], frames[0])
    labels = decode_mask(path)
    right = (labels >= 1) & (labels <= 16)
    shifted = labels.copy()
    shifted[right] = 1 + (labels[right] - 1 + 1) % 16
    path.write_bytes(encode_mask(shifted))
    # 2. a left part label on a right-hand pixel
    other = layout.parts(cams[1], frames[0])
    labels = decode_mask(other).copy()
    y, x = np.argwhere((labels >= 1) & (labels <= 16))[0]
    labels[y, x] = 20
    other.write_bytes(encode_mask(labels))
    # 3. the table edited
    layout.parts_json.write_text(layout.parts_json.read_text().replace("right thumb distal", "right thumb tip"))
    report = check_sequence(copy, sel.mano_dir)
    assert str(path) in " ".join(report.problems["part labels disagree with the meshes"])
    assert len(report.problems["part labels disagree with the meshes"]) == 1
    assert report.problems["parts disagree with the mask"] == [
        f"{other}: 1 pixel(s) where the parts' hand is not the mask's label (1 with the other hand's parts)"]
    assert len(report.problems["wrong parts.json"]) == 1
    # 4. a view without its part image
    layout.parts(cams[2], frames[1]).unlink()
    assert check_sequence(copy, sel.mano_dir).problems["missing parts"] == [str(layout.parts(cams[2], frames[1]))]


def test_merge_export_and_gif_carry_parts(parted, tmp_path):
    import shutil

    from interhand_prep.core.layout import ExportLayout, SequenceLayout
    from interhand_prep.core.options import ExportOptions
    from interhand_prep.stages.check_seq import check_sequence
    from interhand_prep.stages.export import export
    from interhand_prep.stages.gif import make_capture_gifs
    from interhand_prep.stages.merge_seq import merge_sequences

    sel, _, _, platform = parted
    work = tmp_path / "IH"
    shutil.copytree(sel.basedir, work, symlinks=True)
    first, second = sel.replace(basedir=work), sel.replace(basedir=work, seq=SECOND)
    for one in (first, second):
        prepare_blend_weights.run(one, BlendWeightOptions(), progress=False)
    # only the first has part labels: the merge leaves them out, says so, and checks clean
    notes = []
    merged = SequenceLayout(merge_sequences(work, [first.seq, SECOND], "m", note=notes.append))
    assert any("parts/ and parts.json left out" in n for n in notes)
    assert not (merged.root / "parts").exists() and not merged.parts_json.exists()
    report = check_sequence(merged.root, sel.mano_dir)
    assert report.ok, report.summary()
    # both with part labels: merged, linked, checked
    render_mesh.run(second, RenderOptions(backend=platform, render_workers=1, parts=True), progress=False)
    notes = []
    merged = SequenceLayout(merge_sequences(work, [first.seq, SECOND], "m", force=True, note=notes.append))
    assert not any("parts" in n for n in notes)
    frames = merged.read_frames()
    assert len(frames) == 5 and merged.parts_json.is_symlink()
    for cam in merged.read_cams():
        for frame in frames:
            assert merged.parts(cam, frame).is_symlink() and merged.parts(cam, frame).is_file()
    report = check_sequence(merged.root, sel.mano_dir)
    assert report.ok and report.counts["part samples"] > 0, report.summary()
    # export: parts beside the masks, in both formats
    for fmt in ("nerfstudio", "easymocap"):
        result = export(first, ExportOptions(format=fmt), progress=False)
        out = ExportLayout(result.dest)
        assert result.parts and "part labels" in result.summary()
        cam, frame = first.layout.read_cams()[0], first.layout.read_frames()[0]
        assert out.parts(cam, frame).read_bytes() == first.layout.parts(cam, frame).read_bytes()
        assert json.loads(out.parts_json.read_text()) == json.loads(first.layout.parts_json.read_text())
        if fmt == "nerfstudio":
            entries = json.loads(out.transforms_json.read_text())["frames"]
            assert all((out.root / e["parts_path"]).is_file() for e in entries)
    # gif --overlay parts: the part colours over the image
    gif, = make_capture_gifs(work, "train", 0, seqs=[first.seq], overlay="parts", progress=False)
    from PIL import Image

    with Image.open(gif) as im:
        assert im.n_frames == 3
