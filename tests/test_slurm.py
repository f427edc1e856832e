"""interhand-prep submit and status on a real one-node Slurm cluster (Debian's slurm-wlm and munge,
slurmctld and slurmd as root on this machine, no accounting), started in a temporary folder.

Skipped with a reason where the packages or root are missing; CI installs them and runs it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from interhand_prep.core.layout import SequenceLayout
from interhand_prep.synthetic.capture import CaptureSpec, SequenceSpec, generate_capture

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SEQUENCES = ["0051_dinosaur", "0266_dh_pray", "0000_neutral_relaxed", "0270_dh_fist"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "the test cluster's daemons run as root"
    lacking = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel") if not shutil.which(b)]
    return f"not installed: {', '.join(lacking)} (apt-get install slurm-wlm munge)" if lacking else None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node cluster: -> the environment its clients need (SLURM_CONF)."""
    reason = _missing()
    if reason:
        if os.environ.get("CI") and os.geteuid() == 0 and shutil.which("apt-get"):
            pytest.fail(f"CI installs Slurm: {reason}")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("slurm")
    for name in ("state", "spool"):
        (root / name).mkdir()
    (root / "munge.key").write_bytes(os.urandom(1024))
    os.chmod(root / "munge.key", 0o400)
    host = socket.gethostname()
    conf = root / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=interhandtest", f"SlurmctldHost={host}", "AuthType=auth/munge",
        f"AuthInfo=socket={root}/munge.socket", "CredType=cred/munge", "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none", "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "SlurmUser=root",
        "SlurmdUser=root", f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid", f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}", "ReturnToService=2", "MpiDefault=none",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        f"SlurmctldLogFile={root}/slurmctld.log", f"SlurmdLogFile={root}/slurmd.log", "KillWait=30",
        f"NodeName={host} CPUs={os.cpu_count()} State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
    env = dict(os.environ, SLURM_CONF=str(conf))
    subprocess.run(["munged", f"--socket={root}/munge.socket", f"--key-file={root}/munge.key",
                    f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log", f"--seed-file={root}/munge.seed",
                    "--force"], check=True, env=env)
    subprocess.run(["slurmctld", "-f", str(conf)], check=True, env=env)
    subprocess.run(["slurmd", "-f", str(conf)], check=True, env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env).stdout.strip()
        if state == "idle":
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the test cluster did not come up: {(root / 'slurmctld.log').read_text()[-2000:]}")
    yield env
    subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True)
    subprocess.run(["scontrol", "shutdown"], env=env, capture_output=True)
    for name in ("slurmd", "slurmctld", "munged"):
        pid_file = root / f"{name}.pid"
        if pid_file.is_file():
            try:
                os.kill(int(pid_file.read_text().split()[0]), 15)
            except (ProcessLookupError, ValueError):
                pass


@pytest.fixture(scope="module")
def capture(tmp_path_factory, slow_render_hooks):
    """Four small sequences (4 cameras x 4 frames at 1/4 size) and a hidden folder beside them."""
    root = tmp_path_factory.mktemp("slurm_capture")
    spec = CaptureSpec(capture=0, seed=5, camera_ids=["400002", "400016", "410214", "400412"], image_scale=0.25,
                       default_cases=False, sequences=[SequenceSpec(s, "both" if "_dh_" in s else "right", 4)
                                                       for s in SEQUENCES])
    generate_capture(root / "IH", root / "mano", spec)
    hidden = root / "IH/images/train/Capture0/.ipynb_checkpoints"
    shutil.copytree(root / "IH/images/train/Capture0" / SEQUENCES[0], hidden / SEQUENCES[0])
    shutil.copytree(slow_render_hooks, root / "hooks")  # a test-side slow-down, in every task
    return root


def _interhand(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "interhand_prep", *args], capture_output=True, text=True, env=env,
                          cwd=cwd)


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def test_submit_processes_every_sequence_once_and_summarises(cluster, capture, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(capture / "IH", data / "IH", symlinks=True)
    where = ["--all", "--capture", "0", "--basedir", str(data / "IH"), "--mano-dir", str(capture / "mano"),
             "--hand-type", "auto"]
    too_many = _interhand("submit", *where, f"--sbatch=--cpus-per-task={os.cpu_count() + 1}", env=cluster,
                          cwd=tmp_path)
    assert too_many.returncode == 2 and f"the largest node of this cluster has {os.cpu_count()} CPUs" in too_many.stderr
    assert not (data / "IH" / "logs").exists()
    start = time.time()
    submitted = _interhand("submit", *where, "--sbatch=--cpus-per-task=1", env=cluster, cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job = re.search(rf"submitted array job (\d+) \({len(SEQUENCES)} task\(s\)", submitted.stdout).group(1)
    assert "skipping 1 folder(s) of Capture0 without cam*/image*.jpg: .ipynb_checkpoints" in submitted.stderr
    logs = data / "IH" / "logs"
    summary = logs / f"summary_{job}.tsv"
    _wait(summary.is_file, 300, f"{summary}")
    seconds = time.time() - start
    rows = [line.split("\t") for line in summary.read_text().splitlines()[1:]]
    assert [(r[1], r[2]) for r in rows] == [(s, "done") for s in sorted(SEQUENCES)], summary.read_text()
    for seq in SEQUENCES:
        log = (logs / f"train_Capture0_{seq}.log").read_text()
        assert log.count("==== run ") == 1 and "(slurm job " in log and "OK:" in log, log[-1500:]
        assert (SequenceLayout.for_sequence(data / "IH", "train", 0, seq).root / "mask").is_dir()
    assert len(list(logs.glob("slurm-*.out"))) == len(SEQUENCES) + 1 and not list(tmp_path.glob("slurm-*.out"))
    status = _interhand("status", *where, env=cluster, cwd=tmp_path)
    assert status.returncode == 0 and f"{len(SEQUENCES)} done of {len(SEQUENCES)} sequence(s)" in status.stdout, status.stdout + status.stderr
    print(f"submit to summary: {seconds:.1f} s for {len(SEQUENCES)} sequences of 4 cameras x 4 frames")


def test_scancel_then_resubmit_renders_no_finished_view_twice(cluster, capture, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(capture / "IH", data / "IH", symlinks=True)
    where = ["--capture", "0", "--basedir", str(data / "IH"), "--mano-dir", str(capture / "mano"),
             "--hand-type", "auto", "--render-workers", "1"]
    hold = tmp_path / "hold-renders"  # each task renders a task of 6 views and one more, then waits
    hold.touch()
    slow = dict(cluster, PYTHONPATH=os.pathsep.join([str(capture / "hooks"), str(REPO)]), SLOW_RENDER_HOLD=str(hold),
                SLOW_RENDER_FREE="7")
    seqs = SEQUENCES[:2]
    submitted = _interhand("submit", *seqs, *where, "--sbatch=--cpus-per-task=1", env=slow, cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job = re.search(r"submitted array job (\d+)", submitted.stdout).group(1)
    layouts = [SequenceLayout.for_sequence(data / "IH", "train", 0, s) for s in seqs]

    def views_done() -> bool:  # the render journal of every sequence records finished views
        return all(layout.progress("render_mesh").is_file()
                   and layout.progress("render_mesh").read_text().count("\ndone ") >= 3 for layout in layouts)

    _wait(views_done, 240, "finished views in both sequences' render journals")
    subprocess.run(["scancel", job], check=True, env=cluster)
    time.sleep(0.5)  # the SIGTERM has arrived: the held view is the last of each task
    hold.unlink()
    _wait(lambda: not subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True,
                                     env=cluster).stdout.strip(), 120, "the cancelled tasks to end")
    written = {p: p.stat().st_mtime_ns for layout in layouts for p in (layout.root / "mask").rglob("*.png")}
    assert written
    status = _interhand("status", *seqs, *where, env=cluster, cwd=tmp_path)
    assert status.returncode == 1 and "not done: array indices 0,1" in status.stdout, status.stdout + status.stderr
    rerun = re.search(r"^  (sbatch --array=0,1 --output=\S+/logs/slurm-%A_%a.out --wrap .*)$", status.stdout,
                      flags=re.M).group(1)
    again = subprocess.run(rerun.replace("sbatch ", "sbatch --parsable ", 1), shell=True, capture_output=True,
                           text=True, env=cluster, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    job2 = again.stdout.strip().split(";")[0]
    _wait(lambda: not subprocess.run(["squeue", "-h", "-j", job2], capture_output=True, text=True,
                                     env=cluster).stdout.strip(), 240, "the resubmitted tasks to end")
    final = _interhand("status", *seqs, *where, env=cluster, cwd=tmp_path)
    assert final.returncode == 0, final.stdout + final.stderr
    for path, stamp in written.items():  # no finished view was rendered again
        assert path.stat().st_mtime_ns == stamp, path
    for layout in layouts:
        views = len(layout.read_cams()) * len(layout.read_frames())
        assert len(list((layout.root / "mask").rglob("*.png"))) == views
