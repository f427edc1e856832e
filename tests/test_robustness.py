"""Bad input, the annotation cache, the per-sequence lock, and check_seq."""

from __future__ import annotations

import json
import multiprocessing
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from interhand_prep.core import annotation_cache
from interhand_prep.core.dataset import AnnotationFiles, image_name
from interhand_prep.stages.check_seq import check_sequence

REPO = Path(__file__).resolve().parents[1]
# the small capture's two-hand sequence: 8 frames from 46 (the right-hand one has 1-8, then 37 apart)
TWO_HAND_FRAMES = list(range(46, 54))


def frames_of(seq: str) -> list[int]:
    assert seq == "0266_dh_pray"
    return TWO_HAND_FRAMES

ANN = "IH/annotations/train"


def get_annots(capture: Path, *extra: str, seq: str = "0266_dh_pray") -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "get_annots.py"), "--capture", "0", "--seq", seq, "--hand-type", "both",
           "--basedir", str(capture / "IH"), "--mano-dir", str(capture / "mano"), "--quiet", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _set_mano(frame_offset: int, hand: str, key: str, value):
    def change(data):
        data["0"][str(frames_of("0266_dh_pray")[frame_offset])][hand][key] = value
    return change


def _write_number(capture: Path, literal: str) -> None:
    """Put a raw number literal (valid JSON, not a finite float) into a kept frame's right trans."""
    path = capture / ANN / "InterHand2.6M_train_MANO_NeuralAnnot.json"
    edit_json(path, _set_mano(0, "right", "trans", [123456.789, 0.0, 1.0]))
    path.write_text(path.read_text().replace("123456.789", literal))


BAD_INPUTS = {
    "truncated camera.json": (lambda c: (c / ANN / "InterHand2.6M_train_camera.json").write_bytes(
        (c / ANN / "InterHand2.6M_train_camera.json").read_bytes()[:300]), r"InterHand2.6M_train_camera.json: not valid JSON"),
    "non-JSON MANO file": (lambda c: (c / ANN / "InterHand2.6M_train_MANO_NeuralAnnot.json").write_text("MANO params here"),
                           r"InterHand2.6M_train_MANO_NeuralAnnot.json: not valid JSON"),
    "capture absent from camera.json": (lambda c: edit_json(c / ANN / "InterHand2.6M_train_camera.json",
                                                            lambda d: d.update({"5": d.pop("0")})),
                                        r"camera.json: no cameras for capture 0 \(it has 5\)"),
    "capture absent from MANO": (lambda c: edit_json(c / ANN / "InterHand2.6M_train_MANO_NeuralAnnot.json",
                                                     lambda d: d.update({"5": d.pop("0")})),
                                 r"MANO_NeuralAnnot.json: no MANO parameters for capture 0"),
    "sequence absent from the image folders": (lambda c: shutil.rmtree(c / "IH/images/train/Capture0/0266_dh_pray"),
                                               r"0266_dh_pray: sequence folder not found; Capture0 has 0051_dinosaur"),
    "camera folder without parameters": (lambda c: edit_json(c / ANN / "InterHand2.6M_train_camera.json",
                                                             lambda d: [v.pop("400016") for v in d["0"].values()]),
                                         r"camera.json: no parameters for camera\(s\) cam400016"),
    "zero-byte JPEG": (lambda c: (c / "IH/images/train/Capture0/0266_dh_pray/cam410214" / image_name(
        frames_of("0266_dh_pray")[4])).write_bytes(b""), r"cam410214/image\d+\.jpg: empty \(zero-byte\) image"),
    "unreadable JPEG": (lambda c: (c / "IH/images/train/Capture0/0266_dh_pray/cam400002" / image_name(
        frames_of("0266_dh_pray")[0])).write_bytes(b"not a jpeg at all"), r"cam400002/image\d+\.jpg: unreadable image"),
    "MANO entry of the wrong length": (lambda c: edit_json(c / ANN / "InterHand2.6M_train_MANO_NeuralAnnot.json",
                                                           _set_mano(0, "left", "pose", [0.0] * 47)),
                                       r"frame \d+ left hand: 'pose' has 47 values, expected 48"),
    "MANO entry with a NaN token": (lambda c: edit_json(c / ANN / "InterHand2.6M_train_MANO_NeuralAnnot.json",
                                                        _set_mano(0, "right", "trans", [float("nan"), 0.0, 1.0])),
                                    r"MANO_NeuralAnnot.json: not valid JSON \(lexical error.*NaN"),
    "MANO entry that is not finite": (lambda c: _write_number(c, "1e999"),
                                      r"MANO_NeuralAnnot.json: not valid JSON \(parse error: numeric \(floating point\) overflow.*1e999"),
    "right model given as left": (lambda c: shutil.copy(c / "mano/MANO_RIGHT.pkl", c / "mano/MANO_LEFT.pkl"),
                                  r"MANO_LEFT.pkl: this is the right-hand model"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_line_and_nothing_is_written(capture, case):
    damage, message = BAD_INPUTS[case]
    damage(capture)
    proc = get_annots(capture)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("get_annots.py: error: ")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == lines[0]  # the error is the last word, on one line
    import re

    assert re.search(message, lines[0]), lines[0]
    seq_dir = capture / "IH/images/train/Capture0/0266_dh_pray"
    if seq_dir.is_dir():
        assert not (seq_dir / "annots.npy").exists() and not (seq_dir / "params").exists()
        assert not list(seq_dir.rglob("*.tmp"))
    debug = get_annots(capture, "--debug")
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_output_folder_that_is_not_writable(capture, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    proc = get_annots(capture, "--out-root", str(blocker / "out"))
    assert proc.returncode == 2 and "output folder is not writable" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("get_annots.py: error: ")


def test_a_camera_without_images_is_reported_not_fatal(capture):
    proc = get_annots(capture)  # the capture's camera 410210 has parameters but no images
    assert proc.returncode == 0 and "1 camera(s) of camera.json have no images here" in proc.stdout


def test_annotation_cache_is_built_once_and_follows_its_source(capture):
    files = AnnotationFiles(capture / "IH", "train")
    before = annotation_cache.builds
    first = annotation_cache.load_capture_mano(files.mano, 0)
    assert annotation_cache.builds == before + 1
    folder = annotation_cache.cache_dir(files.mano)
    stamp = (folder / "mano.meta.json").stat().st_mtime_ns
    again = annotation_cache.load_capture_mano(files.mano, 0)
    assert annotation_cache.builds == before + 1 and (folder / "mano.meta.json").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(first.params["right"], again.params["right"])
    # the cached values are the JSON's values
    raw = json.loads(files.mano.read_text())["0"]
    frame = frames_of("0266_dh_pray")[0]
    entry = raw[str(frame)]["left"]
    pose, shape, trans = first.arrays([frame], "left")
    np.testing.assert_array_equal(pose[0], entry["pose"])
    np.testing.assert_array_equal(trans[0], entry["trans"])
    # a changed source is parsed again
    edit_json(files.mano, _set_mano(0, "left", "trans", [1.0, 2.0, 3.0]))
    changed = annotation_cache.load_capture_mano(files.mano, 0)
    assert annotation_cache.builds == before + 2
    np.testing.assert_array_equal(changed.arrays([frame], "left")[2][0], [1.0, 2.0, 3.0])


def _load_and_count(path: str) -> int:
    annotation_cache.load_capture_mano(Path(path), 0)
    return annotation_cache.builds


def test_concurrent_runs_build_the_cache_once(capture):
    files = AnnotationFiles(capture / "IH", "train")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        counts = pool.map(_load_and_count, [str(files.mano)] * 3)
    assert sum(counts) == 1


def test_a_second_run_on_the_same_sequence_is_refused(capture):
    seq_dir = capture / "IH/images/train/Capture0/0266_dh_pray"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[2]); from interhand_prep.core.locking import sequence_lock\n"
        "with sequence_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(30)"), str(seq_dir), str(REPO)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = get_annots(capture)
        assert proc.returncode == 2
        assert f"another run is processing this sequence (pid {holder.pid} on " in proc.stderr
        assert not (seq_dir / "annots.npy").exists()
    finally:
        holder.kill()
        holder.wait()
    # the lock dies with its holder: no stale lock
    assert get_annots(capture).returncode == 0


def test_check_seq_passes_and_then_names_each_problem(capture, gl_platform):
    from interhand_prep.stages import pipeline
    from interhand_prep.core.selection import SequenceSelector

    sel = SequenceSelector(capture=0, seq="0266_dh_pray", basedir=capture / "IH", mano_dir=capture / "mano",
                           hand_type="both")
    report = pipeline.run_sequence(sel, log=lambda m: None)
    assert report.ok, report.stages
    clean = check_sequence(sel.layout.root, capture / "mano")
    assert clean.ok, clean.summary()
    assert ", 2 hands, " in clean.summary().splitlines()[0]
    layout = sel.layout
    frames, cams = layout.read_frames(), layout.read_cams()
    layout.mask(cams[1], frames[2]).unlink()
    bw = layout.bweights("left", frames[1])
    bw.write_bytes(bw.read_bytes()[:200])
    params = np.load(layout.params("right", frames[3]), allow_pickle=True).item()
    params["shapes"] = np.zeros((1, 9), np.float32)
    np.save(layout.params("right", frames[3]), params, allow_pickle=True)
    broken = check_sequence(sel.layout.root, capture / "mano")
    assert not broken.ok
    assert set(broken.problems) == {"missing mask", "unreadable bweights", "wrong params"}
    assert str(layout.mask(cams[1], frames[2])) in broken.problems["missing mask"][0]
    cli = subprocess.run([sys.executable, str(REPO / "check_seq.py"), str(sel.layout.root), "--mano-dir",
                          str(capture / "mano")], capture_output=True, text=True)
    assert cli.returncode == 1
    for kind in ("missing mask", "unreadable bweights", "wrong params"):
        assert f"1 x {kind}" in cli.stdout


def test_check_seq_summary_counts_in_words():
    from interhand_prep.stages.check_seq import CheckReport

    one = CheckReport(Path("/seq"), counts={"frames": 1, "cameras": 2, "hands": 1})
    assert one.summary().splitlines()[0] == "/seq: 1 frame, 2 cameras, 1 hand"


def test_temporaries_of_a_killed_run_are_removed_by_the_next(capture):
    seq_dir = capture / "IH/images/train/Capture0/0266_dh_pray"
    stale = [seq_dir / "params" / "right" / ".12.npy.abc123.tmp", seq_dir / ".annots.npy.x1y2z3.tmp"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    assert get_annots(capture).returncode == 0
    assert not any(p.exists() for p in stale)
    assert (seq_dir / "annots.npy").is_file()


def test_the_cache_build_and_any_wait_for_it_are_logged_with_times(capture, caplog):
    import logging
    import threading

    files = AnnotationFiles(capture / "IH", "train")
    folder = annotation_cache.cache_dir(files.mano)
    held, release = threading.Event(), threading.Event()

    def another_builder():  # holds the build lock as a concurrent run would
        with annotation_cache._locked(folder, "mano"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=another_builder)
    thread.start()
    held.wait(10)
    threading.Timer(0.3, release.set).start()
    with caplog.at_level(logging.INFO, logger="interhand_prep.core.annotation_cache"):
        annotation_cache.load_capture_mano(files.mano, 0)
    thread.join()
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("annotation cache mano: waiting for another process") for m in messages), messages
    waited = next(m for m in messages if m.startswith("annotation cache mano: waited"))
    assert float(waited.split()[-2]) >= 0.2
    assert any(m.startswith(f"annotation cache mano: building from {files.mano}") for m in messages)
    assert any(re.match(r"annotation cache mano: built in \d+\.\d s \(\d+ captures\)", m) for m in messages)
