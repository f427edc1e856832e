"""Runs that are refused, fail or stop: the folder and manifest of a refused run stay as they were,
a stopped run resumes where it stopped, and what users type must exist."""

from __future__ import annotations

import os
import shutil as shutil_module
from pathlib import Path

import numpy as np
import pytest

from interhand_prep.cli import run_script
from interhand_prep.core import fileio
from interhand_prep.core import gl_renderer
from interhand_prep.core.errors import InputError
from interhand_prep.core.layout import MASK_LABELS, SequenceLayout
from interhand_prep.core.manifest import Manifest
from interhand_prep.core.options import AnnotsOptions, BlendWeightOptions, ExportOptions, RenderOptions
from interhand_prep.stages import get_annots as annots
from interhand_prep.stages import prepare_blend_weights as blend_weights
from interhand_prep.stages import render_mesh
from interhand_prep.stages import export as export_stage
from interhand_prep.stages.base import Previous
from interhand_prep.stages.check_seq import check_sequence

ONE, TWO = "0051_dinosaur", "0266_dh_pray"


def view_outputs(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for kind in ("mask", "depth") for p in sorted((root / kind).rglob("*"))
            if p.is_file()}


# ---------------------------------------------------------------------------------------------
# A refused run leaves everything as it was


@pytest.mark.parametrize("refused", [dict(hand_type="left"), dict(max_joint_error=1.0)],
                         ids=["hand missing in the sequence", "every frame over --max-joint-error"])
def test_a_refused_get_annots_leaves_folder_and_manifest_as_they_were(helpers, gl_platform, tiny, refused):
    sel = helpers.selector(tiny, ONE)
    helpers.run_stages(sel)
    before = helpers.state(sel.layout.root)
    hand_type = refused.get("hand_type", "right")
    opts = AnnotsOptions(max_joint_error=refused.get("max_joint_error"))
    with pytest.raises(InputError, match="no frame left"):
        annots.run(helpers.selector(tiny, ONE, hand_type=hand_type), opts, progress=False)
    assert helpers.state(sel.layout.root) == before  # bytes, times and modes of every file, prep.json too
    record = Manifest.read(sel.layout.root).stage("get_annots")
    assert record["result"]["hands"] == ["right"]
    # the later stages, check-seq and export still see the finished run
    assert annots.run(sel, progress=False).up_to_date
    assert render_mesh.run(sel, RenderOptions(backend=gl_platform), progress=False).up_to_date
    report = check_sequence(sel.layout.root)
    assert report.ok and all(note.startswith("fit:") for note in report.notes), report.summary()
    assert not export_stage.export(sel, ExportOptions(format="easymocap"), progress=False).up_to_date


def test_a_joint_regressor_the_user_typed_must_exist(helpers, tiny, capsys):
    sel = helpers.selector(tiny, ONE)
    annots.run(sel, progress=False)
    table = sel.layout.fit_quality.read_bytes()
    before = helpers.state(sel.layout.root)
    missing = tiny / "no" / "such" / "J.npy"
    argv = ["--capture", "0", "--seq", ONE, "--basedir", str(tiny / "IH"), "--mano-dir", str(tiny / "mano"),
            "--joint-regressor", str(missing), "--quiet"]
    assert run_script("get-annots", argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(missing) in err and "not found" in err
    assert helpers.state(sel.layout.root) == before and sel.layout.fit_quality.read_bytes() == table
    # the default regressor may be absent: a warning, no table
    (tiny / "mano" / "J_regressor_mano_ih26m.npy").unlink()
    assert run_script("get-annots", argv[:-3] + ["--quiet"]) == 0
    assert not sel.layout.fit_quality.exists()


# ---------------------------------------------------------------------------------------------
# A stopped run resumes


def interrupt_after(monkeypatch, cls, name: str, calls: int) -> None:
    """Make cls.name raise KeyboardInterrupt (as Ctrl-C does) on its `calls`-th call."""
    real = getattr(cls, name)
    count = {"n": 0}

    def wrapper(*args, **kwargs):
        count["n"] += 1
        if count["n"] == calls:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(cls, name, wrapper)


def test_an_interrupted_render_resumes_with_the_bytes_of_a_whole_run(helpers, gl_platform, tiny, tmp_path, monkeypatch):
    sel = helpers.selector(tiny, TWO, hand_type="both")
    annots.run(sel, progress=False)
    opts = RenderOptions(backend=gl_platform, render_workers=1)
    views = len(sel.layout.read_frames()) * len(sel.layout.read_cams())
    per_task = render_mesh.FRAMES_PER_TASK * len(sel.layout.read_cams())
    interrupt_after(monkeypatch, SequenceLayout, "write_view", per_task + 2)  # in the second task
    with pytest.raises(KeyboardInterrupt):
        render_mesh.run(sel, opts, progress=False)
    monkeypatch.undo()
    assert Manifest.read(sel.layout.root).stage("render_mesh") is None  # never finished here
    assert sel.layout.progress("render_mesh").is_file()
    finished = len(list((sel.layout.root / "mask").rglob("*.png")))  # every view written before the stop
    assert per_task < finished < views
    plan = render_mesh.STAGE.plan(sel, opts, Previous.read(sel.layout, "render_mesh"))
    assert "interrupted" in plan.reason and len(plan.todo) == views - finished
    # the unfinished stage is no finished sequence: check-seq says so, export refuses
    report = check_sequence(sel.layout.root)
    assert report.problems["stage stopped before it finished"] == [
        f"{sel.layout.progress('render_mesh')}: render_mesh's last run was stopped; rerun it (it resumes) before "
        "using the data"], report.summary()
    with pytest.raises(InputError, match="render_mesh was stopped before it finished here"):
        export_stage.export(sel, ExportOptions(format="easymocap"), progress=False)

    again = render_mesh.run(sel, opts, progress=False)
    assert again.rendered == views - finished and again.resumed == finished and again.skipped == finished
    assert not sel.layout.progress("render_mesh").exists()
    assert render_mesh.run(sel, opts, progress=False).up_to_date
    reference = helpers.selector(tiny, TWO, hand_type="both", out_root=tmp_path / "ref")
    annots.run(reference, progress=False)
    render_mesh.run(reference, opts, progress=False)
    assert view_outputs(sel.layout.root) == view_outputs(reference.layout.root)


def test_a_view_an_unfinished_run_replaced_is_never_trusted(helpers, gl_platform, tiny, monkeypatch):
    """The meshes change, a render stops after rewriting some views, the meshes change back: the
    record matches again, but the views the stopped run wrote (the journal names them) are redone."""
    sel = helpers.selector(tiny, TWO, hand_type="both")
    annots.run(sel, progress=False)
    opts = RenderOptions(backend=gl_platform, render_workers=1)
    render_mesh.run(sel, opts, progress=False)
    first = view_outputs(sel.layout.root)
    frames, cams = sel.layout.read_frames(), sel.layout.read_cams()
    path = sel.layout.vertices("right", frames[0])
    original = path.read_bytes()
    np.save(path, np.load(path) + np.float32(0.02))  # the right hand 2 cm away in the first frame
    interrupt_after(monkeypatch, SequenceLayout, "write_view", len(cams))  # at the last of its views
    with pytest.raises(KeyboardInterrupt):
        render_mesh.run(sel, opts, progress=False)
    monkeypatch.undo()
    assert view_outputs(sel.layout.root) != first  # the stopped run replaced views of the first frame
    path.write_bytes(original)
    again = render_mesh.run(sel, opts, progress=False)
    assert again.rendered == len(cams)  # exactly the views the stopped run was to redo
    assert view_outputs(sel.layout.root) == first


def test_interrupted_grids_resume(helpers, tiny, monkeypatch):
    sel = helpers.selector(tiny, TWO, hand_type="both")
    annots.run(sel, progress=False)
    frames = len(sel.layout.read_frames())
    opts = BlendWeightOptions(lbs_workers=1)
    interrupt_after(monkeypatch, blend_weights, "frame_grids_of", 2)  # the right hand's grids are done
    with pytest.raises(KeyboardInterrupt):
        blend_weights.run(sel, opts, progress=False)
    monkeypatch.undo()
    again = blend_weights.run(sel, opts, progress=False)
    assert again.resumed == frames and again.written == {"right": 0, "left": frames}
    assert blend_weights.run(sel, opts, progress=False).up_to_date


def test_the_free_space_check_counts_only_what_is_left(helpers, gl_platform, tiny, monkeypatch):
    sel = helpers.selector(tiny, TWO, hand_type="both")
    annots.run(sel, progress=False)
    opts = RenderOptions(backend=gl_platform, render_workers=1)
    whole = render_mesh.STAGE.plan(sel, opts, Previous.read(sel.layout, "render_mesh")).needed_bytes
    views = len(sel.layout.read_frames()) * len(sel.layout.read_cams())
    done = 2 * render_mesh.FRAMES_PER_TASK * len(sel.layout.read_cams())  # two of three tasks finish
    assert done > views / 2
    interrupt_after(monkeypatch, SequenceLayout, "write_view", done + 1)
    with pytest.raises(KeyboardInterrupt):
        render_mesh.run(sel, opts, progress=False)
    monkeypatch.undo()
    finished = len(list((sel.layout.root / "mask").rglob("*.png")))
    assert finished >= done
    usage = shutil_module.disk_usage(sel.layout.root)
    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: usage._replace(free=int(whole * 0.6)))
    again = render_mesh.run(sel, opts, progress=False)  # the rest fits; all of it would not
    assert again.rendered == views - finished


def test_ctrl_c_at_any_point_of_a_write_leaves_no_temporary(tmp_path, monkeypatch):
    real_open = os.open

    def interrupted_open(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        if flags & os.O_CREAT and str(path).endswith(fileio.TEMPORARY_SUFFIX):
            raise KeyboardInterrupt  # just after the temporary file came into being
        return fd

    monkeypatch.setattr(os, "open", interrupted_open)
    with pytest.raises(KeyboardInterrupt):
        fileio.write_bytes(tmp_path / "vertices" / "12.npy", b"data")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


# ---------------------------------------------------------------------------------------------
# The label check before a mask is written


def two_hand_view(helpers, gl_platform, tiny):
    """A rendered view of the tiny two-hand sequence where both hands are well visible."""
    sel = helpers.selector(tiny, TWO, hand_type="both")
    annots.run(sel, progress=False)
    render_mesh.run(sel, RenderOptions(backend=gl_platform, render_workers=1), progress=False)
    layout = sel.layout
    best = None
    for cam in layout.read_cams():
        for frame in layout.read_frames():
            mask = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(layout.mask(cam, frame)))
            counts = [(mask == MASK_LABELS[h]).sum() for h in ("left", "right")]
            if best is None or min(counts) > best[0]:
                best = (min(counts), cam, frame)
    return sel, best[1], best[2]


def test_label_problem_flags_a_hand_under_the_other_label(helpers, gl_platform, tiny):
    from interhand_prep.core.layout import decode_depth, decode_mask

    sel, cam, frame = two_hand_view(helpers, gl_platform, tiny)
    layout = sel.layout
    mask, depth = decode_mask(layout.mask(cam, frame)), decode_depth(layout.depth(cam, frame))[..., 0]
    cameras = layout.read_cameras().subset([cam])
    projected = {}
    for hand in ("left", "right"):
        pixels, z = cameras.project(np.load(layout.vertices(hand, frame)).astype(np.float64) * 1000.0)
        projected[hand] = (pixels[0], z[0] / 1000.0)
    assert gl_renderer.label_problem(mask, depth, projected) is None
    both_left = np.where(mask > 0, MASK_LABELS["left"], 0).astype(np.uint8)  # what the evidence file shows
    problem = gl_renderer.label_problem(both_left, depth, projected)
    assert problem is not None and "right hand" in problem
    swapped = np.choose(mask // 100, [0, MASK_LABELS["right"], MASK_LABELS["left"]]).astype(np.uint8)
    assert gl_renderer.label_problem(swapped, depth, projected) is not None


def test_a_view_with_wrong_labels_is_rendered_again_or_never_written(helpers, gl_platform, tiny, monkeypatch):
    sel, cam, frame = two_hand_view(helpers, gl_platform, tiny)
    good = sel.layout.mask(cam, frame).read_bytes()
    real = gl_renderer.HandViewRenderer.render
    wrong = {"left": 1}

    def sometimes_wrong(self, cam_id):
        mask, depth = real(self, cam_id)
        if cam_id == cam and wrong["left"] > 0 and (mask == MASK_LABELS["left"]).any():
            wrong["left"] -= 1
            mask = np.where(mask > 0, MASK_LABELS["left"], 0).astype(np.uint8)
        return mask, depth

    monkeypatch.setattr(gl_renderer.HandViewRenderer, "render", sometimes_wrong)
    opts = RenderOptions(backend=gl_platform, render_workers=1)
    result = render_mesh.run(sel.replace(overwrite=True), opts, progress=False)
    assert result.rechecked == 1 and sel.layout.mask(cam, frame).read_bytes() == good
    # wrong every time: the stage stops and that view's mask is not written
    sel.layout.mask(cam, frame).unlink()
    wrong["left"] = 10 ** 6
    with pytest.raises(RuntimeError, match="wrong hand labels twice"):
        render_mesh.run(sel, opts, progress=False)
    assert not sel.layout.mask(cam, frame).exists()
