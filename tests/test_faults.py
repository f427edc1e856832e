"""Mistakes and faults, tried as users meet them: misspelt names, relative paths, a killed main
process, Ctrl-C, two runs on one sequence, a full disk; check_seq without options; --hand-type auto."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from interhand_prep.cli import run_script
from interhand_prep.core.errors import InputError
from interhand_prep.core.manifest import Manifest
from interhand_prep.core.options import RenderOptions
from interhand_prep.core.selection import SequenceSelector
from interhand_prep.stages.process import RUN_HEADER, last_run
from interhand_prep.stages import prepare_blend_weights as blend_weights
from interhand_prep.stages import render_mesh
from interhand_prep.synthetic.capture import CaptureSpec, SequenceSpec, generate_capture

pytestmark = pytest.mark.slow  # whole commands in subprocesses

REPO = Path(__file__).resolve().parents[1]
ONE, TWO = "0051_dinosaur", "0266_dh_pray"

FRAMES = 12
KEPT_CAMERAS = 3


@pytest.fixture(scope="module")
def capture(tmp_path_factory, slow_render_hooks):
    """A right-hand and a two-hand sequence, 4 cameras (3 portrait) x 12 frames at 1/4 size."""
    root = tmp_path_factory.mktemp("faults")
    spec = CaptureSpec(capture=0, seed=9, camera_ids=["400002", "400016", "410214", "400412"], image_scale=0.25,
                       default_cases=False, sequences=[SequenceSpec(ONE, "right", FRAMES), SequenceSpec(TWO, "both", FRAMES)])
    generate_capture(root / "IH", root / "mano", spec)
    shutil.copytree(slow_render_hooks, root / "hooks")  # a test-side slow-down, in every process
    return root


@pytest.fixture
def data(capture, tmp_path, helpers):
    return helpers.copy_capture(capture, tmp_path)


def slow_env(capture: Path, seconds: float = 0.1, hold: Path | None = None, free: int = 0) -> dict:
    """Each view slowed by `seconds`; with `hold`, each process stops after `free` views while that
    file exists (conftest's SLOW_RENDER)."""
    path = os.pathsep.join([str(capture / "hooks"), str(REPO), os.environ.get("PYTHONPATH", "")])
    held = {"SLOW_RENDER_HOLD": str(hold), "SLOW_RENDER_FREE": str(free)} if hold else {}
    return dict(os.environ, PYTHONPATH=path, SLOW_RENDER_SECONDS=str(seconds), PYTHON=sys.executable, **held)


def as_from_a_terminal() -> None:
    """In the child before exec: Ctrl-C's default action, as a command typed at a terminal has it. A
    test run started in the background (`pytest &` in a script) ignores SIGINT, and every process
    it starts would inherit that and never see the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def held_file(folder: Path) -> Path:
    hold = folder / "hold-renders"
    hold.touch()
    return hold


def process_cmd(data: Path, *extra: str) -> list[str]:
    return ["bash", str(REPO / "process.sh"), "--capture", "0", "--basedir", str(data / "IH"), "--mano-dir",
            str(data / "mano"), "--hand-type", "both", "--logs", str(data / "logs"), "--quiet", *extra]


def held_process(data: Path, capture: Path, platform: str, hold: Path, free: int) -> subprocess.Popen:
    """process.sh on the two-hand sequence, holding after `free` views while `hold` exists, in a
    process group of its own."""
    return subprocess.Popen(process_cmd(data, TWO, "--backend", platform), env=slow_env(capture, 0.02, hold, free),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=as_from_a_terminal)


def render_cmd(data: Path, platform: str, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "render_mesh.py"), "--capture", "0", "--seq", TWO, "--basedir",
            str(data / "IH"), "--mano-dir", str(data / "mano"), "--hand-type", "both", "--backend", platform,
            "--render-workers", "2", "--quiet", *extra]


def selector(root: Path, seq: str = TWO, **kw) -> SequenceSelector:
    return SequenceSelector(capture=0, seq=seq, basedir=root / "IH", mano_dir=root / "mano", **kw)


def prepared(data: Path) -> SequenceSelector:
    """The two-hand sequence with get_annots and the grids done (render left to the test)."""
    from interhand_prep.stages import get_annots as annots

    sel = selector(data, hand_type="both")
    annots.run(sel, progress=False)
    blend_weights.run(sel, progress=False)
    return sel


def wait_for_masks(root: Path, count: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(list((root / "mask").rglob("*.png"))) >= count:
            return
        if proc.poll() is not None:
            pytest.fail(f"finished before {count} masks existed: {proc.returncode}")
        time.sleep(0.02)
    pytest.fail(f"no {count} masks after {timeout} s")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def wait_until_gone(pgid: int, seconds: float = 3.0) -> None:
    """Every process of the group (workers, resource tracker) exits within `seconds`."""
    deadline = time.time() + seconds
    while group_members(pgid) and time.time() < deadline:
        time.sleep(0.05)
    assert group_members(pgid) == [], "workers or the resource tracker survived the main process"


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry))
    return out


def holds(pid: int, path: Path) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def assert_masks_complete(root: Path) -> None:
    for png in (root / "mask").rglob("*.png"):
        Image.open(png).load()  # whatever exists under a final name is whole


# ---------------------------------------------------------------------------------------------
# Faults during render


def test_killing_the_main_process_takes_its_workers_along(gl_platform, data, capture):
    platform = gl_platform
    sel = prepared(data)
    held = slow_env(capture, 0.02, held_file(data), free=7)  # each worker: a task of 6 views and one more
    proc = subprocess.Popen(render_cmd(data, platform), env=held, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_masks(sel.layout.root, 14, proc)  # more than two tasks of 6 views: some are journaled
        workers = [p for p in children(proc.pid) if holds(p, sel.layout.root / ".lock")]
        assert len(workers) == 2, "each worker holds the sequence lock's descriptor"
        os.kill(proc.pid, signal.SIGKILL)  # what the out-of-memory killer does
        proc.wait()
        wait_until_gone(proc.pid)
    finally:
        for pid in group_members(proc.pid):
            os.kill(pid, signal.SIGKILL)
    assert_masks_complete(sel.layout.root)
    again = subprocess.run(render_cmd(data, platform), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert len(list((sel.layout.root / "mask").rglob("*.png"))) == FRAMES * KEPT_CAMERAS
    rendered = int(re.search(r"(\d+) views rendered", again.stdout).group(1))
    assert 0 < rendered < FRAMES * KEPT_CAMERAS and "finished by an interrupted run" in again.stdout, again.stdout
    assert not (sel.layout.root / ".lock").exists() and not list(sel.layout.root.rglob("*.tmp"))


def test_ctrl_c_stops_render_after_the_work_in_hand(helpers, gl_platform, data, capture, tmp_path):
    """Ctrl-C: the tasks in hand finish (FRAMES_PER_TASK frames of every camera each: one running
    per worker, and those the process pool has already queued for the workers), nothing more is
    started, and the command exits 130 promptly (each worker held after two views until the signal has arrived)."""
    platform = gl_platform
    sel = prepared(data)
    hold = held_file(data)  # each worker renders 2 views, then waits for the signal
    proc = subprocess.Popen(render_cmd(data, platform), env=slow_env(capture, 0.02, hold, free=2),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=as_from_a_terminal)
    wait_for_masks(sel.layout.root, 4, proc)
    start = time.time()
    at_signal = len(list((sel.layout.root / "mask").rglob("*.png")))
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal sends it: to the whole group
    time.sleep(0.2)  # the signal has arrived before the views in hand go on
    hold.unlink()
    _, stderr = proc.communicate(timeout=15)
    elapsed = time.time() - start
    assert proc.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr, stderr
    in_hand = 4 * render_mesh.FRAMES_PER_TASK * KEPT_CAMERAS  # two workers' tasks, two queued
    after = len(list((sel.layout.root / "mask").rglob("*.png")))
    assert after <= at_signal + in_hand and after < FRAMES * KEPT_CAMERAS, (at_signal, after)
    # the tasks in hand take about 1.2 s; a loaded machine may need more
    assert elapsed < 5.0, f"took {elapsed:.1f} s to stop"
    wait_until_gone(proc.pid)
    assert_masks_complete(sel.layout.root)
    # the rerun completes it with the bytes of an uninterrupted run, rendering only what is left
    again = subprocess.run(render_cmd(data, platform), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert int(re.search(r"(\d+) views rendered", again.stdout).group(1)) < FRAMES * KEPT_CAMERAS
    reference = selector(data, hand_type="both", out_root=tmp_path / "ref")
    helpers.run_stages(reference)
    ours = {k: v for k, v in helpers.output_files(sel.layout.root).items() if k.startswith(("mask", "depth"))}
    ref = {k: v for k, v in helpers.output_files(reference.layout.root).items() if k.startswith(("mask", "depth"))}
    assert ours == ref


def test_ctrl_c_of_process_reports_interrupted_and_the_rerun_resumes(gl_platform, data, capture):
    platform = gl_platform
    hold = held_file(data)
    proc = held_process(data, capture, platform, hold, free=8)
    root = selector(data).layout.root
    wait_for_masks(root, 8, proc)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal sends it
    time.sleep(0.2)
    hold.unlink()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines() if line.startswith(TWO) and "[" not in line}
    assert rows[TWO] == "interrupted" and "FAILED" not in out and "Traceback" not in out + err, out + err
    assert "run the same command again" in out
    left = FRAMES * KEPT_CAMERAS - len(list((root / "mask").rglob("*.png")))
    again = subprocess.run(process_cmd(data, TWO, "--backend", platform), capture_output=True, text=True,
                           env=dict(os.environ, PYTHON=sys.executable))
    assert again.returncode == 0, again.stdout + again.stderr
    whole = (data / "logs" / f"train_Capture0_{TWO}.log").read_text()
    assert whole.count(RUN_HEADER) == 2, whole  # the stopped run's part is kept
    log = last_run(whole)
    rendered = int(re.search(r"(\d+) views rendered", log).group(1))
    assert left <= rendered < FRAMES * KEPT_CAMERAS and "finished by an interrupted run" in log, log


def test_a_refused_run_leaves_the_running_ones_files_alone(gl_platform, data, capture):
    platform = gl_platform
    # held after two views until the two refused runs are done
    hold = held_file(data)
    first = held_process(data, capture, platform, hold, free=2)
    root = selector(data).layout.root
    wait_for_masks(root, 2, first)
    log = data / "logs" / f"train_Capture0_{TWO}.log"
    head = log.read_bytes()
    # the same logs folder: refused before the log is touched
    same = subprocess.run(process_cmd(data, TWO, "--backend", platform), capture_output=True, text=True,
                          env=dict(os.environ, PYTHON=sys.executable))
    assert same.returncode == 1 and "another process.sh is running this sequence" in same.stdout
    # another logs folder: its child is refused by the sequence lock
    other = subprocess.run(process_cmd(data, TWO, "--backend", platform, "--logs", str(data / "logs2")),
                           capture_output=True, text=True, env=dict(os.environ, PYTHON=sys.executable))
    assert other.returncode == 1 and "another run is processing this sequence" in other.stdout
    assert log.read_bytes().startswith(head)
    hold.unlink()
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err
    text = log.read_text()
    assert "\0" not in text and "[annots] running" in text and "[render] running" in text and "OK:" in text


# ---------------------------------------------------------------------------------------------
# Disk space


def test_a_full_disk_is_one_line_naming_the_file(data, monkeypatch, capsys):
    from interhand_prep.core import fileio

    real = fileio._open_temporary

    def full_disk(tmp):
        os.close(real(tmp))
        return os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC

    monkeypatch.setattr(fileio, "_open_temporary", full_disk)
    argv = ["--capture", "0", "--seq", TWO, "--basedir", str(data / "IH"), "--mano-dir", str(data / "mano"), "--quiet"]
    status = run_script("get-annots", argv)
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err.count("\n") == 0 and err.startswith("get_annots.py: error: ")
    assert err.endswith(": No space left on device") and f"error: {data}/" in err  # names the file
    assert not list(data.rglob("*.tmp")) and not selector(data).layout.annots.exists()


def test_too_little_free_space_stops_before_any_work(data, monkeypatch):
    sel = prepared(data)
    import shutil as shutil_module

    usage = shutil_module.disk_usage(sel.layout.root)
    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: usage._replace(free=200_000))
    with pytest.raises(InputError, match=r"masks and depth maps need about 0\.\d+ GB, only 0\.00 GB is free"):
        render_mesh.run(sel, RenderOptions(backend="osmesa"), progress=False)
    assert not (sel.layout.root / "mask").exists() and Manifest.read(sel.layout.root).stage("render_mesh") is None


# ---------------------------------------------------------------------------------------------
# process.sh mistakes


def test_a_misspelt_sequence_stops_and_creates_nothing(helpers, data):
    before = helpers.state(data)
    proc = subprocess.run(process_cmd(data, "0266_dh_pary"), capture_output=True, text=True,
                          env=dict(os.environ, PYTHON=sys.executable))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0
    assert "no sequence '0266_dh_pary'" in proc.stderr and "closest: 0266_dh_pray" in proc.stderr
    wrong_capture = subprocess.run(process_cmd(data, TWO)[:3] + ["1"] + process_cmd(data, TWO)[4:], capture_output=True,
                                   text=True, env=dict(os.environ, PYTHON=sys.executable))
    assert wrong_capture.returncode == 2 and "Capture1: no such capture; closest: Capture0" in wrong_capture.stderr
    assert helpers.state(data) == before and not (data / "logs").exists()


def test_relative_paths_are_the_callers(gl_platform, data):
    caller = data / "elsewhere"
    caller.mkdir()
    cmd = ["bash", str(REPO / "process.sh"), "--capture", "0", ONE, "--basedir", "../IH", "--mano-dir", "../mano",
           "--out-root", "out", "--logs", "logs", "--quiet", "--backend", gl_platform]
    proc = subprocess.run(cmd, cwd=caller, capture_output=True, text=True, env=dict(os.environ, PYTHON=sys.executable))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (caller / "out" / "train" / "Capture0" / ONE / "annots.npy").is_file()
    assert (caller / "logs" / f"train_Capture0_{ONE}.log").is_file()
    assert not (REPO / "out").exists() and not (REPO / "IH").exists()


def test_hand_type_auto_over_a_capture(gl_platform, data):
    # folders that are not sequences: a hidden copy of one (Jupyter's), and an empty one
    capture_dir = selector(data, ONE).layout.root.parent
    shutil.copytree(capture_dir / ONE, capture_dir / ".ipynb_checkpoints" / ONE)
    (capture_dir / "notes").mkdir()
    proc = subprocess.run(process_cmd(data, "--all", "--backend", gl_platform, "--hand-type", "auto"),
                          capture_output=True, text=True, env=dict(os.environ, PYTHON=sys.executable))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--all: skipping 2 folder(s) of Capture0 without cam*/image*.jpg: .ipynb_checkpoints, notes" in proc.stderr
    assert "processing 2 sequence(s)" in proc.stdout and ".ipynb" not in proc.stdout
    hands = {seq: Manifest.read(selector(data, seq).layout.root).stage("get_annots")["result"]["hands"] for seq in (ONE, TWO)}
    assert hands == {ONE: ["right"], TWO: ["right", "left"]}
    assert (selector(data, ONE).layout.root / "lbs" / "right").is_dir()
    assert not (selector(data, ONE).layout.root / "lbs" / "left").exists()
    assert (selector(data, TWO).layout.root / "lbs" / "left" / "tbw.npy").is_file()
    # and --hand-type both over the same capture still fails, clearly, on the one-hand sequence
    both = subprocess.run(process_cmd(data, "--all", "--backend", gl_platform),  # the two-hand one: up to date
                          capture_output=True, text=True, env=dict(os.environ, PYTHON=sys.executable))
    assert both.returncode == 1 and "no MANO for the left hand" in both.stdout


# ---------------------------------------------------------------------------------------------
# check_seq


def test_check_seq_needs_only_the_sequence(helpers, data):
    sel = selector(data, hand_type="both")
    helpers.run_stages(sel)

    def check(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "check_seq.py"), "--basedir", str(data / "IH"),
                               "--capture", "0", "--seq", TWO, *extra], capture_output=True, text=True, cwd=data)

    ok = check()
    assert ok.returncode == 0 and "OK" in ok.stdout and "MANO files" not in ok.stdout, ok.stdout + ok.stderr
    assert "note: fit: right: mean joint error median" in ok.stdout  # from fit_quality.csv
    (data / "mano").rename(data / "mano_moved")
    moved = check()  # a problem (exit 1) naming the skipped checks, unless --no-mano asks for that
    assert moved.returncode == 1, moved.stdout
    assert "1 x MANO files missing, moved or changed" in moved.stdout and "not found" in moved.stdout
    assert "skipped the checks that need them (params identity, vertex count, mask labels)" in moved.stdout
    skipped = check("--no-mano")
    assert skipped.returncode == 0 and "note: --no-mano: skipped the checks that need the MANO model" in skipped.stdout
    (data / "mano_moved").rename(data / "mano")
    with open(data / "mano" / "MANO_LEFT.pkl", "ab") as f:
        f.write(b"\0")  # a changed file (pickle ignores trailing bytes)
    changed = check()
    assert changed.returncode == 1 and "MANO_LEFT.pkl changed since processing" in changed.stdout
    sel.layout.mask(sel.layout.read_cams()[0], sel.layout.read_frames()[0]).unlink()
    broken = check()
    assert broken.returncode == 1 and "1 x missing mask" in broken.stdout


def test_stale_locks_are_recognised(tmp_path):
    """A lock of a dead run (its flock is free) is taken over; one of another host is honoured
    until it has not been refreshed for STALE_LOCK_SECONDS."""
    import json as json_module
    import socket

    from interhand_prep.core.locking import STALE_LOCK_SECONDS, SequenceLock

    lock_file = tmp_path / ".lock"
    lock_file.write_text(json_module.dumps({"host": socket.gethostname(), "pid": 999999, "since": "yesterday"}))
    with SequenceLock(tmp_path):  # same host, nobody holds the flock: a dead run's leftover
        assert json_module.loads(lock_file.read_text())["pid"] == os.getpid()
    assert not lock_file.exists()

    lock_file.write_text(json_module.dumps({"host": "node17", "pid": 4242, "since": "today"}))
    with pytest.raises(InputError, match=r"another run is processing this sequence \(pid 4242 on node17"):
        SequenceLock(tmp_path).acquire()
    old = time.time() - STALE_LOCK_SECONDS - 60
    os.utime(lock_file, (old, old))
    with SequenceLock(tmp_path):  # not refreshed for too long: abandoned
        pass
    assert not lock_file.exists()
