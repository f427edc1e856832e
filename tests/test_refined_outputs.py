"""The refined masks (refine-masks: mask_cihp/, mask_quality.csv) in the commands that read a
processed sequence: check-seq verifies them against the MANO masks, merge-seq merges them only
when every source has them, export chooses the masks (--masks), gif tints them (--overlay refined).

The broken refined masks are made here from the MANO masks, and the bound they must keep is worked
out here from annots.npy, the depth maps and the vertices as the check-seq docstring states it, not
taken from the code under test.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from interhand_prep.cli import BY_NAME, run_command
from interhand_prep.core.constants import HAND_COLORS
from interhand_prep.core.errors import InputError
from interhand_prep.core.layout import MASK_LABELS, SequenceLayout, decode_mask, encode_mask
from interhand_prep.core.manifest import Manifest
from interhand_prep.core.options import ExportOptions, GifOptions, RefineOptions
from interhand_prep.core.selection import SequenceSelector
from interhand_prep.stages import export as export_stage
from interhand_prep.stages import merge_seq, refine_masks
from interhand_prep.stages.check_seq import check_sequence
from interhand_prep.stages.gif import make_capture_gifs

ONE, TWO = "0051_dinosaur", "0266_dh_pray"
LEFT, RIGHT = 100, 200
HEADER = "frame,camera,hand,mano_pixels,refined_pixels,iou_with_mano,status"
BAND_MM = 8.0  # refine-masks' default --band-mm


@pytest.fixture(scope="module")
def processed_root(tiny_root, gl_platform, tmp_path_factory) -> Path:
    """The tiny capture with both sequences through every stage (default --hand-type right: the
    masks of the two-hand sequence show the left hand too, posed from the annotations), and
    refine-masks on the two-hand one only. Each run ends with check-seq, which must pass."""
    from interhand_prep.stages import pipeline

    root = tmp_path_factory.mktemp("refined")
    shutil.copytree(tiny_root / "IH", root / "IH", symlinks=True)
    shutil.copytree(tiny_root / "mano", root / "mano")
    for seq, refine in ((ONE, False), (TWO, True)):
        opts = pipeline.StageOptions(run_refine_masks=refine)
        opts = dataclasses.replace(opts, render=dataclasses.replace(opts.render, backend=gl_platform, render_workers=1),
                                   refine=dataclasses.replace(opts.refine, refine_workers=1))
        sel = SequenceSelector(capture=0, seq=seq, basedir=root / "IH", mano_dir=root / "mano")
        report = pipeline.run_sequence(sel, opts, log=lambda m: None)
        assert report.ok, report.stages
        assert report.stages["refine"].status == ("done" if refine else "off")
    return root


@pytest.fixture
def work(processed_root, tmp_path, helpers) -> Path:
    """A private copy of the processed capture (tmp/IH, tmp/mano); file times are kept."""
    return helpers.copy_capture(processed_root, tmp_path)


def _layout(root: Path, seq: str) -> SequenceLayout:
    return SequenceLayout.for_sequence(root / "IH", "train", 0, seq)


def _selector(root: Path, seq: str) -> SequenceSelector:
    return SequenceSelector(capture=0, seq=seq, basedir=root / "IH", mano_dir=root / "mano")


def _views(layout: SequenceLayout, *labels: int, only: bool = False) -> list[tuple[str, int]]:
    """The views whose MANO mask has at least 30 pixels of each of `labels` (`only`: and no other)."""
    out = []
    for cam in layout.read_cams():
        for frame in layout.read_frames():
            mask = decode_mask(layout.mask(cam, frame))
            if all(np.count_nonzero(mask == label) >= 30 for label in labels) and (
                    not only or set(np.unique(mask)) <= {0, *labels}):
                out.append((cam, frame))
    return out


def _rows(layout: SequenceLayout) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(layout.mask_quality.read_text())))


def _write_rows(layout: SequenceLayout, rows: list[dict[str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, HEADER.split(","), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    layout.mask_quality.write_text(buf.getvalue())


def _kinds(report, pattern: str) -> list[str]:
    return [kind for kind in report.problems if re.search(pattern, kind)]


# ---------------------------------------------------------------------------------------------
# check-seq


def test_refined_sequence_is_checked_and_passes(processed_root):
    two, one = _layout(processed_root, TWO), _layout(processed_root, ONE)
    report = check_sequence(two.root)
    assert report.ok, report.summary()
    views = len(two.read_cams()) * len(two.read_frames())
    assert report.counts["refined views"] == views
    rows = _rows(two)
    assert two.mask_quality.read_text().splitlines()[0] == HEADER
    assert len(rows) == 2 * views  # both hands drawn: one row per view and hand
    assert "refined" in {r["status"] for r in rows}
    # the refinement changed something (else the checks below would prove little)
    assert any(not np.array_equal(decode_mask(two.mask(c, f)), decode_mask(two.refined_mask(c, f)))
               for c in two.read_cams() for f in two.read_frames())
    # a sequence without refine-masks is no problem, and nothing about refined masks is counted
    plain = check_sequence(one.root)
    assert plain.ok and "refined views" not in plain.counts, plain.summary()


def test_a_wrong_label_inside_the_mano_footprint_is_caught(work, capsys):
    two = _layout(work, TWO)
    cam, frame = _views(two, LEFT, RIGHT)[0]
    path = two.refined_mask(cam, frame)
    refined, mano = decode_mask(path).copy(), decode_mask(two.mask(cam, frame))
    changed = (refined == RIGHT) & (mano == RIGHT)
    refined[changed] = LEFT  # the right hand labelled left
    path.write_bytes(encode_mask(refined))
    report = check_sequence(two.root)
    kind = "mask_cihp relabels MANO pixels"
    assert report.problems[kind] == [f"{path}: {changed.sum()} hand pixel(s) inside the MANO footprint carry another "
                                     f"label than in {two.mask(cam, frame)}"], report.summary()
    status = run_command("check-seq", [str(two.root)])
    out = capsys.readouterr().out
    assert status == 1 and f"1 x {kind}" in out and str(path) in out


def _bound(layout: SequenceLayout, cam: str, frame: int, mano: np.ndarray) -> int:
    """check-seq's documented bound, worked out here for a view of the right hand alone:
    max(2, round(band_mm * focal / depth)) + 1, the depth that of the hand's nearest point (its
    pixels in the depth map, its vertices)."""
    annots = np.load(layout.annots, allow_pickle=True).item()
    K, R, T = (np.asarray(annots["cams"][k][cam], dtype=np.float64) for k in ("K", "R", "T"))
    focal = (K[0, 0] + K[1, 1]) / 2
    depth_m = np.load(layout.depth(cam, frame))[..., 0]
    nearest = [depth_m[mano > 0].min() * 1000.0]
    vertices_mm = np.load(layout.vertices("right", frame)).astype(np.float64) * 1000.0
    nearest.append((vertices_mm @ R.T + T.reshape(1, 3))[:, 2].min())
    return max(2, int(round(BAND_MM * focal / min(nearest)))) + 1


def test_refined_pixels_beyond_the_bound_are_caught(work):
    two = _layout(work, TWO)
    cam, frame = _views(two, RIGHT, only=True)[0]  # the left hand, posed from the annotations, not in view
    path = two.refined_mask(cam, frame)
    mano = decode_mask(two.mask(cam, frame))
    bound = _bound(two, cam, frame, mano)
    assert 2 < bound < 10
    from_right = ndimage.distance_transform_edt(mano != RIGHT)
    free = (mano == 0) & (decode_mask(path) == 0)

    def add_right_pixel(low: float, high: float) -> tuple[int, int]:
        ys, xs = np.nonzero(free & (from_right > low) & (from_right <= high))
        assert len(ys), (low, high)
        refined = decode_mask(path).copy()
        refined[ys[0], xs[0]] = RIGHT
        path.write_bytes(encode_mask(refined))
        return ys[0], xs[0]

    add_right_pixel(bound - 1, bound)  # at the bound: allowed
    report = check_sequence(two.root)
    assert report.ok, report.summary()
    add_right_pixel(bound + 0.5, bound + 2)  # just beyond
    add_right_pixel(3 * bound, np.inf)  # far beyond
    report = check_sequence(two.root)
    kind = "mask_cihp beyond its bound around the MANO mask"
    assert list(report.problems) == [kind], report.summary()
    message, = report.problems[kind]
    assert message.startswith(f"{path}: 2 pixel(s) at {RIGHT} (right) up to ")
    assert f"(bound {bound} px: 8 mm at " in message


def test_a_missing_refined_mask_and_a_broken_one_are_named(work):
    two = _layout(work, TWO)
    (cam_a, frame_a), (cam_b, frame_b) = _views(two, RIGHT)[:2]
    two.refined_mask(cam_a, frame_a).unlink()
    two.refined_mask(cam_b, frame_b).write_bytes(encode_mask(np.zeros((5, 7), np.uint8)))  # another size
    report = check_sequence(two.root)
    assert report.problems["missing mask_cihp"] == [str(two.refined_mask(cam_a, frame_a))], report.summary()
    wrong, = report.problems["wrong mask_cihp"]
    assert wrong.startswith(f"{two.refined_mask(cam_b, frame_b)}: uint8 (5, 7)")


def test_a_kept_mano_row_whose_mask_differs_is_caught(work):
    two = _layout(work, TWO)
    rows = _rows(two)
    hand = "right"
    differs = [r for r in rows if r["hand"] == hand and r["status"] == "refined" and not np.array_equal(
        decode_mask(two.refined_mask(r["camera"], int(r["frame"]))) == RIGHT,
        decode_mask(two.mask(r["camera"], int(r["frame"]))) == RIGHT)]
    assert differs
    row = differs[0]
    row["status"] = "kept_mano_collapsed"  # says mask_cihp/ holds the MANO mask of that hand: it does not
    _write_rows(two, rows)
    report = check_sequence(two.root)
    path = two.refined_mask(row["camera"], int(row["frame"]))
    kind = "mask_cihp differs from mask/ where mask_quality.csv says kept_mano"
    assert list(report.problems) == [kind], report.summary()
    message, = report.problems[kind]
    assert message.startswith(f"{path}: the right hand (kept_mano_collapsed) differs from ")
    # the MANO hand written into the refined mask: consistent again
    refined, mano = decode_mask(path).copy(), decode_mask(two.mask(row["camera"], int(row["frame"])))
    refined[refined == RIGHT] = 0
    refined[mano == RIGHT] = RIGHT
    path.write_bytes(encode_mask(refined))
    assert check_sequence(two.root).ok


def test_the_quality_table_is_checked(work):
    two = _layout(work, TWO)
    rows = _rows(two)
    dropped = rows.pop(3)
    rows[0]["status"] = "improved"
    rows[1]["mano_pixels"] = str(int(rows[1]["mano_pixels"]) + 5)
    _write_rows(two, rows)
    report = check_sequence(two.root)
    table = str(two.mask_quality)
    assert report.problems["wrong mask_quality.csv"] == [f"{table}:2: status 'improved' is not refined, "
                                                         "kept_mano_<reason> or no_hand"], report.summary()
    assert report.problems["mask_quality.csv lacks rows"] == [
        f"{table}: frame {rows[0]['frame']}, camera {rows[0]['camera']}: no row for the {rows[0]['hand']} hand",
        f"{table}: frame {dropped['frame']}, camera {dropped['camera']}: no row for the {dropped['hand']} hand"]
    disagree, = report.problems["mask_quality.csv disagrees with mask/"]
    assert f"frame {rows[1]['frame']}, camera {rows[1]['camera']}, {rows[1]['hand']} hand" in disagree
    two.mask_quality.unlink()
    report = check_sequence(two.root)
    assert report.problems["missing mask_quality.csv"] == [table]


# ---------------------------------------------------------------------------------------------
# merge-seq


def test_merge_leaves_out_refined_masks_unless_every_source_has_them(work, helpers):
    base, mano = work / "IH", work / "mano"
    two, one = _layout(work, TWO), _layout(work, ONE)
    notes: list[str] = []
    dest = merge_seq.merge_sequences(base, [TWO, ONE], "mixed", note=notes.append)
    merged = SequenceLayout(dest)
    assert len(notes) == 1 and notes[0].startswith("mask_cihp/ and mask_quality.csv left out of the merge: ")
    assert f"train/Capture0/{ONE} has no refine_masks record" in notes[0]
    assert not (dest / "mask_cihp").exists() and not merged.mask_quality.exists()
    assert (dest / "mask").is_dir()
    # the merged manifest is the first source's without refine_masks: check-seq expects no refined masks
    assert "refine_masks" in Manifest.read(two.root).stages
    assert set(Manifest.read(dest).stages) == set(Manifest.read(two.root).stages) - {"refine_masks"}
    report = check_sequence(dest)
    assert report.ok and "refined views" not in report.counts, report.summary()
    helpers.assert_processed_sequence(dest, ("right",), mano)

    # the CLI prints the note
    run = helpers.script("merge_seq.py", "--basedir", str(base), "--seq", ONE, TWO, "--new-name", "mixed2")
    assert run.returncode == 0, run.stderr
    assert "note: mask_cihp/ and mask_quality.csv left out of the merge" in run.stdout

    # every source refined: linked for every view, the rows of both tables (frames keep their ids)
    refine_masks.run(_selector(work, ONE), RefineOptions(refine_workers=1), progress=False)
    notes.clear()
    dest = merge_seq.merge_sequences(base, [TWO, ONE], "mixed", force=True, note=notes.append)
    assert notes == []
    merged = SequenceLayout(dest)
    for source in (two, one):
        for cam in source.read_cams():
            for frame in source.read_frames():
                link = merged.refined_mask(cam, frame)
                assert link.is_symlink() and not os.path.isabs(os.readlink(link))
                assert link.resolve() == source.refined_mask(cam, frame).resolve()
    rows = _rows(merged)
    expected = {(r["frame"], r["camera"], r["hand"]): r for s in (two, one) for r in _rows(s)}
    keys = [(r["frame"], r["camera"], r["hand"]) for r in rows]
    assert len(keys) == len(set(keys)) == len(merged.read_frames()) * len(merged.read_cams()) * 2
    for key, row in zip(keys, rows):
        if key in expected:
            assert row == expected[key]
        else:  # the one-hand source's views: its left hand is not in them
            assert key[0] in {str(f) for f in one.read_frames()} and key[2] == "left"
            assert (row["mano_pixels"], row["status"]) == ("0", "no_hand")
    assert {k for k in expected} <= set(keys)
    assert Manifest.read(dest).stages == Manifest.read(two.root).stages
    report = check_sequence(dest)
    assert report.ok, report.summary()
    assert report.counts["refined views"] == len(merged.read_frames()) * len(merged.read_cams())


# ---------------------------------------------------------------------------------------------
# export


def _exported_masks(dest: Path, layout: SequenceLayout, kind: str) -> None:
    links = sorted((dest / "masks").rglob("*.png"))
    assert len(links) == len(layout.read_cams()) * len(layout.read_frames())
    for link in links:
        cam, frame = link.parent.name, int(link.stem)
        assert link.resolve() == layout.view(kind, cam, frame, "png").resolve()


def test_export_chooses_the_masks(work, helpers):
    two, one = _layout(work, TWO), _layout(work, ONE)
    sel = _selector(work, TWO)
    auto = export_stage.export(sel, ExportOptions(format="easymocap"), progress=False)
    _exported_masks(auto.dest, two, "mask_cihp")
    assert "masks: refined against the images (mask_cihp/)" in auto.summary()
    mano = export_stage.export(sel, ExportOptions(format="easymocap", masks="mano"), progress=False)
    assert not mano.up_to_date and "masks: MANO renders (mask/)" in mano.summary()
    _exported_masks(mano.dest, two, "mask")
    # nerfstudio's mask_path is the refined mask
    import json

    ns = export_stage.export(sel, ExportOptions(format="nerfstudio", masks="refined"), progress=False)
    view = json.loads((ns.dest / "transforms.json").read_text())["frames"][0]
    assert (ns.dest / view["mask_path"]).resolve() == two.refined_mask(view["camera"], view["frame"]).resolve()
    assert export_stage.export(sel, ExportOptions(format="nerfstudio", masks="auto"), progress=False).up_to_date

    # a sequence without refined masks: auto takes the MANO ones, refined refuses
    plain = export_stage.export(_selector(work, ONE), ExportOptions(format="easymocap"), progress=False)
    _exported_masks(plain.dest, one, "mask")
    assert "masks: MANO renders (mask/)" in plain.summary() and "not used" not in plain.summary()
    with pytest.raises(InputError, match="no refined masks to export \\(refine_masks has not run here\\); run "
                                         "refine_masks.py on it, or use --masks mano"):
        export_stage.export(_selector(work, ONE), ExportOptions(format="easymocap", masks="refined"), progress=False)


def test_export_of_stale_or_stopped_refined_masks(work, helpers):
    two = _layout(work, TWO)
    sel = _selector(work, TWO)
    cam = two.read_cams()[0]
    image = two.image(cam, two.read_frames()[0])
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # an image replaced since refine-masks
    result = export_stage.export(sel, ExportOptions(format="easymocap"), progress=False)
    _exported_masks(result.dest, two, "mask")
    assert f"masks: MANO renders (mask/); the refined masks are not used (camera {cam} or its images changed " \
           "since refine_masks)" in result.summary()
    with pytest.raises(InputError, match=f"camera {cam} or its images changed since refine_masks"):
        export_stage.export(sel, ExportOptions(format="easymocap", masks="refined"), progress=False)
    refine_masks.run(sel, RefineOptions(refine_workers=1), progress=False)  # redoes that camera
    _exported_masks(export_stage.export(sel, ExportOptions(format="easymocap"), progress=False).dest, two, "mask_cihp")

    # a refine-masks run stopped before it finished: refused in one line, unless the MANO masks are asked for
    two.progress("refine_masks").write_text("todo 44:400002 0123456789abcdef\n")
    args = ["--capture", "0", "--seq", TWO, "--basedir", str(work / "IH"), "--format", "easymocap", "--quiet"]
    run = helpers.script("export.py", *args)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "refine_masks was stopped before it finished here; rerun it before export" in run.stderr
    run = helpers.script("export.py", *args, "--masks", "mano")
    assert run.returncode == 0, run.stderr
    assert "masks: MANO renders (mask/)" in run.stdout


# ---------------------------------------------------------------------------------------------
# gif


def test_overlay_option_takes_an_optional_value():
    parser = BY_NAME["gif"].parser("gif", "")
    assert parser.parse_args(["--capture", "0"]).overlay is None
    assert parser.parse_args(["--capture", "0", "--overlay"]).overlay == "mano"
    assert parser.parse_args(["--capture", "0", "--overlay", "--fps", "5"]).overlay == "mano"
    assert parser.parse_args(["--capture", "0", "--overlay", "refined"]).overlay == "refined"
    with pytest.raises(SystemExit):
        parser.parse_args(["--capture", "0", "--overlay", "both"])
    assert GifOptions(overlay="refined").overlay == "refined"
    with pytest.raises(InputError, match="unknown --overlay"):
        GifOptions(overlay="both")


def test_gif_tints_the_refined_masks(work, helpers):
    two = _layout(work, TWO)
    gif, = make_capture_gifs(work / "IH", "train", 0, seqs=[TWO], overlay="refined", progress=False)
    cam = gif.stem[3:]
    frame = two.read_frames()[0]
    with Image.open(gif) as frames:
        shown = np.asarray(frames.convert("RGB")).astype(int)
    image = np.asarray(Image.open(two.image(cam, frame)).convert("RGB")).astype(int)
    refined, mano = decode_mask(two.refined_mask(cam, frame)), decode_mask(two.mask(cam, frame))
    key = np.zeros(refined.shape, bool)
    key[:32, :60] = True  # the legend
    tinted = np.zeros(refined.shape, bool)
    for hand, label in MASK_LABELS.items():
        where = (refined == label) & ~key
        tinted |= where
        if where.any():
            expected = 0.5 * image[where] + 0.5 * np.array(HAND_COLORS[hand])
            assert np.abs(shown[where] - expected).mean() < 12  # GIF palette quantisation
    assert tinted.sum() > 50
    only_mano = (mano > 0) & (refined == 0) & ~key  # the MANO mask's pixels the refinement dropped: not tinted
    if only_mano.sum() >= 5:
        assert np.abs(shown[only_mano] - image[only_mano]).mean() < 12
    # a sequence without refined masks: one line, before any GIF is written
    before = gif.stat().st_mtime_ns
    with pytest.raises(InputError, match=f"{ONE}: no refined masks \\(mask_cihp/\\) to overlay; run refine_masks.py "
                                         "on it first, or use --overlay mano"):
        make_capture_gifs(work / "IH", "train", 0, seqs=[TWO, ONE], overlay="refined", progress=False)
    assert gif.stat().st_mtime_ns == before
    where = ["--capture", "0", "--basedir", str(work / "IH"), "--seq", ONE, "--quiet"]
    run = helpers.script("gif.py", *where, "--overlay", "refined")
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "no refined masks" in run.stderr
    run = helpers.script("gif.py", *where, "--overlay")  # alone: the MANO masks
    assert run.returncode == 0, run.stderr
