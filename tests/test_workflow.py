"""process.sh, merge_seq.py and gif.py on a small synthetic capture."""

from __future__ import annotations

import json
import re
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from interhand_prep.core.errors import InputError
from interhand_prep.core.layout import SequenceLayout
from interhand_prep.core.options import AnnotsOptions
from interhand_prep.core.selection import SequenceSelector
from interhand_prep.stages import get_annots as annots
from interhand_prep.stages import merge_seq as merge
from interhand_prep.core.constants import HAND_COLORS
from interhand_prep.core.layout import MASK_LABELS
from interhand_prep.stages.gif import make_capture_gifs
from interhand_prep.stages.process import RUN_HEADER, last_run
from interhand_prep.synthetic.capture import CaptureSpec, SequenceSpec, generate_capture

pytestmark = pytest.mark.slow  # whole commands in subprocesses

REPO = Path(__file__).resolve().parents[1]

SEQS = ["0051_dinosaur", "0266_dh_pray"]


@pytest.fixture(scope="module")
def small_capture(tmp_path_factory, gl_platform):
    """Two both-hand sequences of 5 cameras x 6 frames at 1/2 image size."""
    root = tmp_path_factory.mktemp("workflow")
    spec = CaptureSpec(capture=0, seed=5, camera_ids=["400002", "400016", "410214", "410219", "400412"],
                       sequences=[SequenceSpec(SEQS[0], "both", 6), SequenceSpec(SEQS[1], "both", 6)],
                       default_cases=False, image_scale=0.5)
    generate_capture(root / "IH", root / "mano", spec)
    return root


@pytest.fixture
def work(small_capture, tmp_path, helpers):
    return helpers.copy_capture(small_capture, tmp_path)


@pytest.fixture(scope="module")
def processed_capture(small_capture, tmp_path_factory) -> Path:
    """A copy of the capture with both sequences processed once (`process.sh --all`): read by the
    tests that need processed sequences (reference outputs, notebooks), copied by those that
    write beside them (merge, GIFs)."""
    work = tmp_path_factory.mktemp("processed")
    shutil.copytree(small_capture / "IH", work / "IH", symlinks=True)
    shutil.copytree(small_capture / "mano", work / "mano")
    processed = process(work, "--all")
    assert processed.returncode == 0, processed.stdout + processed.stderr
    return work


def process(work: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = ["bash", str(REPO / "process.sh"), "--capture", "0", "--hand-type", "both", "--basedir", str(work / "IH"),
           "--mano-dir", str(work / "mano"), "--logs", str(work / "logs"), "--quiet", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHON=sys.executable, **(env or {})))


def layout(work: Path, seq: str) -> SequenceLayout:
    return SequenceLayout.for_sequence(work / "IH", "train", 0, seq)


def test_parallel_run_logs_table_and_resume(helpers, work):
    proc = process(work, "--jobs", "2", "--all")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for seq in SEQS:
        assert (work / "logs" / f"train_Capture0_{seq}.log").is_file()
        helpers.assert_processed_sequence(layout(work, seq).root, ("right", "left"), work / "mano")
    table = proc.stdout[proc.stdout.index("\nsequence "):]
    assert all(f"{seq}" in table for seq in SEQS) and table.count(" ok") == 2
    assert "done" in table and "FAILED" not in table
    # a second run finds every stage up to date and says so
    again = process(work, "--all")
    assert again.returncode == 0
    assert again.stdout.count("skipped") == 3 * len(SEQS)
    whole = (work / "logs" / f"train_Capture0_{SEQS[0]}.log").read_text()
    log = last_run(whole)
    assert "[render] up to date: nothing to do" in log and "[render] running" not in log
    # the first run's part is kept, after its header (time, host, pid, the command)
    assert whole.count(RUN_HEADER) == 2 and "[render] running" in whole
    assert re.search(r"^==== run \d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} on \S+ pid \d+\n  python -m interhand_prep",
                     whole, flags=re.M), whole[:300]
    # a touched input makes get_annots stale (named in the log); its outputs come out the same,
    # so the later stages have nothing to redo
    camera_json = work / "IH/annotations/train/InterHand2.6M_train_camera.json"
    os.utime(camera_json)
    redo = process(work, SEQS[0])
    assert redo.returncode == 0
    log = last_run((work / "logs" / f"train_Capture0_{SEQS[0]}.log").read_text())
    assert "[annots] running: changed: annotations.camera.mtime_ns" in log
    assert "[lbs] up to date" in log and "[render] up to date" in log


def test_one_failing_sequence_does_not_stop_the_others(helpers, work):
    # remove the MANO annotation of one sequence's frames: its get_annots fails, the other runs
    path = work / "IH/annotations/train/InterHand2.6M_train_MANO_NeuralAnnot.json"
    data = json.loads(path.read_text())
    frames = [int(f) for f in data["0"]]
    for frame in sorted(frames)[:6]:  # the first sequence's frames
        data["0"][str(frame)] = {"right": None, "left": None}
    path.write_text(json.dumps(data))
    proc = process(work, "--jobs", "2", *SEQS)
    assert proc.returncode != 0
    assert "FAILED" in proc.stdout and " ok" in proc.stdout
    assert "no frame left" in proc.stdout
    helpers.assert_processed_sequence(layout(work, SEQS[1]).root, ("right", "left"), work / "mano")
    assert "no frame left" in (work / "logs" / f"train_Capture0_{SEQS[0]}.log").read_text()
    # status: one row per sequence from the logs and reports, and the command that reruns the rest
    (work / "IH/images/train/Capture0/0099_not_yet/cam400002").mkdir(parents=True)
    shutil.copy(next((work / "IH/images/train/Capture0" / SEQS[1] / "cam400002").glob("image*.jpg")),
                work / "IH/images/train/Capture0/0099_not_yet/cam400002/image0001.jpg")
    status = process(work, "--all", "--status")
    rows = {line.split()[1]: line.split(None, 3)[2:] for line in status.stdout.splitlines()[1:4]}
    assert status.returncode == 1, status.stdout + status.stderr
    assert rows[SEQS[0]][0] == "failed" and "[annots]" in rows[SEQS[0]][1] and "no frame left" in rows[SEQS[0]][1]
    assert rows[SEQS[1]] == ["done"] and rows["0099_not_yet"][0] == "not"
    indices = {seq: i for i, seq in enumerate(sorted([*SEQS, "0099_not_yet"]))}
    left = ",".join(str(i) for i in sorted((indices[SEQS[0]], indices["0099_not_yet"])))
    assert "1 done, 1 failed, 1 not started of 3 sequence(s)" in status.stdout
    assert f"not done: array indices {left}" in status.stdout and f"sbatch --array={left} --output=" in status.stdout
    assert "interhand_prep process --all" in status.stdout and "--hand-type both" in status.stdout


def test_slurm_array_index_picks_one_sequence(work):
    proc = process(work, "--all", env={"SLURM_ARRAY_TASK_ID": "1"})
    assert proc.returncode == 0, proc.stderr
    assert layout(work, SEQS[1]).annots.is_file() and not layout(work, SEQS[0]).annots.is_file()
    bad = process(work, "--all", env={"SLURM_ARRAY_TASK_ID": "2"})
    assert bad.returncode == 2 and "outside the 2 sequences" in bad.stderr


def test_resume_after_a_kill_gives_identical_outputs(work, processed_capture):
    reference = processed_capture  # the same sequence processed by one uninterrupted run

    # start a run and SIGKILL its whole process group once some masks exist
    cmd = ["bash", str(REPO / "process.sh"), "--capture", "0", "--hand-type", "both", "--basedir", str(work / "IH"),
           "--mano-dir", str(work / "mano"), "--logs", str(work / "logs"), "--quiet", SEQS[1]]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=dict(os.environ, PYTHON=sys.executable))
    masks = layout(work, SEQS[1]).root / "mask"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(masks.rglob("*.png"))) < 5:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(masks.rglob("*.png")))
    assert 0 < done_before < 5 * 6  # really interrupted mid-way
    # whatever exists under a final name is complete
    for png in masks.rglob("*.png"):
        Image.open(png).load()
    rerun = process(work, SEQS[1])
    assert rerun.returncode == 0, rerun.stdout
    assert "skipped" in rerun.stdout  # get_annots finished before the kill
    ours, ref = layout(work, SEQS[1]), layout(reference, SEQS[1])
    for cam in ref.read_cams():
        for frame in ref.read_frames():
            assert ours.mask(cam, frame).read_bytes() == ref.mask(cam, frame).read_bytes()
            np.testing.assert_array_equal(np.load(ours.depth(cam, frame, "npy")),
                                          np.load(ref.depth(cam, frame, "npy")))
    assert not list(ours.root.rglob("*.tmp"))


def test_merge_loads_like_a_single_sequence(helpers, processed_capture, tmp_path):
    work = helpers.copy_capture(processed_capture, tmp_path)
    dest = merge.merge_sequences(work / "IH", [SEQS[0], f"Capture0/{SEQS[1]}"], "various")
    assert dest == work / "IH/merge/various"
    helpers.assert_processed_sequence(dest, ("right", "left"), work / "mano")
    frames = [f for s in SEQS for f in layout(work, s).read_frames()]
    assert SequenceLayout(dest).read_frames() == sorted(frames)
    assert (dest / "seqs.txt").read_text().split() == [f"train/Capture0/{s}" for s in SEQS]
    # links only (relative), except the small files of the merge (its manifest is the first source's)
    files = [p for p in dest.rglob("*") if not p.is_dir() or p.is_symlink()]
    real = sorted(p.name for p in files if not p.is_symlink())
    assert real == ["annots.npy", "cams.txt", "frames.txt", "prep.json", "seqs.txt"]
    assert (dest / "prep.json").read_bytes() == layout(work, SEQS[0]).manifest.read_bytes()
    assert all(not os.path.isabs(os.readlink(p)) for p in files if p.is_symlink())
    # the CLI refuses to overwrite, and --force replaces
    cmd = [sys.executable, str(REPO / "merge_seq.py"), "--basedir", str(work / "IH"), "--seq", *SEQS, "--new-name", "various"]
    refused = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert refused.returncode == 2 and "pass --force" in refused.stderr
    forced = subprocess.run(cmd + ["--force"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert forced.returncode == 0, forced.stderr
    helpers.assert_processed_sequence(dest, ("right", "left"), work / "mano")
    assert not list((work / "IH/merge").glob(".*"))


def test_merge_refusals_write_nothing(work, small_capture, tmp_path):
    base = work / "IH"
    for seq in SEQS:
        annots.run(SequenceSelector(capture=0, seq=seq, basedir=base, mano_dir=work / "mano", hand_type="both"),
                   progress=False)
    cases = {
        "not processed": ([SEQS[0], "0999_missing"], "has not been processed"),
        "collide": ([SEQS[0], SEQS[0]], "frame ids collide"),
        "entry": ([SEQS[0], "a/b/c/d"], "cannot read sequence entry"),
    }
    for name, (entries, message) in cases.items():
        with pytest.raises(InputError, match=message):
            merge.merge_sequences(base, entries, name)
    # different camera sets: one sequence keeps its landscape camera
    annots.run(SequenceSelector(capture=0, seq=SEQS[1], basedir=base, mano_dir=work / "mano", hand_type="both"),
               AnnotsOptions(keep_landscape=True), progress=False)
    with pytest.raises(InputError, match="camera sets differ"):
        merge.merge_sequences(base, SEQS, "cams")
    # different camera parameters: the same camera ids in another capture
    spec = CaptureSpec(capture=1, seed=99, camera_ids=["400002", "400016", "410214", "410219", "400412"],
                       sequences=[SequenceSpec("0300_other", "both", 6)], default_cases=False, image_scale=0.5)
    generate_capture(base, work / "mano", spec)
    annots.run(SequenceSelector(capture=1, seq="0300_other", basedir=base, mano_dir=work / "mano", hand_type="both"),
               progress=False)
    with pytest.raises(InputError, match="camera parameters differ"):
        merge.merge_sequences(base, [SEQS[0], "Capture1/0300_other"], "params")
    assert not (base / "merge").exists() or not any((base / "merge").iterdir())


def test_gifs_have_every_frame_and_tint_the_masks(helpers, processed_capture, tmp_path):
    work = helpers.copy_capture(processed_capture, tmp_path)
    seq_layout = layout(work, SEQS[1])
    frames = seq_layout.read_frames()
    plain, = make_capture_gifs(work / "IH", "train", 0, seqs=[SEQS[1]], progress=False)
    assert plain == work / "IH/gif/train/Capture0" / SEQS[1] / "cam400002.gif"
    with Image.open(plain) as gif:
        # GIF stores delays in 10 ms steps: 30 fps is written as 30 ms
        assert gif.n_frames == len(frames) and abs(gif.info["duration"] - 1000 / 30) <= 10
    tinted, = make_capture_gifs(work / "IH", "train", 0, seqs=[SEQS[1]], overlay=True, stride=2, progress=False)
    with Image.open(tinted) as gif:
        assert gif.n_frames == len(frames[::2])
        gif.seek(1)
        shown = np.asarray(gif.convert("RGB")).astype(int)
    image = np.asarray(Image.open(seq_layout.image("400002", frames[2])).convert("RGB")).astype(int)
    mask = np.asarray(Image.open(seq_layout.mask("400002", frames[2])))
    key = np.zeros(mask.shape, bool)
    key[:32, :60] = True  # the legend: a swatch and the name of each hand
    for row, hand in enumerate(("left", "right")):
        assert np.abs(shown[9 + 14 * row, 9] - np.array(HAND_COLORS[hand])).max() < 12
    for hand, label in MASK_LABELS.items():
        where = (mask == label) & ~key
        assert where.sum() > 20
        expected = 0.5 * image[where] + 0.5 * np.array(HAND_COLORS[hand])
        assert np.abs(shown[where] - expected).mean() < 12  # GIF palette quantisation
    outside = (mask == 0) & ~key
    assert np.abs(shown[outside] - image[outside]).mean() < 6


FIGURES = {"dataset_vis.ipynb": ["camera_rig.png"],
           "new_anno_vis.ipynb": ["mesh_projection.png", "mesh_coordinates.png", "tpose.png", "blend_weights.png",
                                  "mask_depth.png", "fit_error.png", "fit_worst_frame.png"]}


@pytest.mark.parametrize("name", list(FIGURES))
def test_notebooks_are_stripped_and_run_headless(processed_capture, name):
    work = processed_capture
    import nbformat

    book = nbformat.read(REPO / name, as_version=4)
    assert all(not cell.get("outputs") for cell in book.cells if cell.cell_type == "code"), "strip the outputs"
    parameters = next(c for c in book.cells if "parameters" in c.metadata.get("tags", []))
    assert book.cells.index(parameters) <= 1 and "/work" not in parameters.source and "/tmp" not in parameters.source
    sys.path.insert(0, str(REPO / "tools"))
    from run_notebooks import run

    values = {"basedir": repr(str(work / "IH")), "sequence": repr(SEQS[1])}
    executed = run(REPO / name, dict(values, hand=repr("left")) if name == "new_anno_vis.ipynb" else values)
    folder = layout(work, SEQS[1]).root / "figures"
    for figure in FIGURES[name]:
        with Image.open(folder / figure) as image:  # a whole PNG of a readable size, at 150 dpi
            assert image.format == "PNG" and min(image.size) > 400 and round(image.info["dpi"][0]) == 150
        assert (folder / figure).with_suffix(".svg").read_text().rstrip().endswith("</svg>")  # the SVG beside it
    printed = [o["text"] for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if o.get("output_type") == "stream"]
    assert printed[-1].strip().splitlines()[-1] == f"figures: {folder}"
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert not errors, errors  # no warnings printed by the notebook's code
