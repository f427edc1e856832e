"""process.sh: run every stage over many sequences, in parallel, resumably; and the demo.

Each sequence runs in its own process (`python -m interhand_prep.stages.pipeline`) logging to
<logs>/<split>_Capture<N>_<seq>.log (<logs>: --logs, else <out-root or basedir>/logs, beside the
data), so one failing sequence never stops the others. A run appends its part to the log, after a
header line (time, host, pid, Slurm job and task, the command): earlier runs' parts are kept. Under
a Slurm job array (SLURM_ARRAY_TASK_ID set) only that entry of the sequence list is processed.
"""

from __future__ import annotations

import difflib
import fcntl
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..core.constants import DEFAULT_BASEDIR, DEMO_SEQUENCES
from ..core.dataset import InterHandDataset, capture_folder, split_images_folder
from ..core.errors import InputError
from ..core.fileio import FILE_MODE, write_text
from ..core.layout import log_path
from ..core.selection import SequenceSelector, selector_from_args
from ..core.options import to_argv
from .pipeline import STAGES, SequenceReport, StageOptions
from ..synthetic.capture import CaptureSpec, SequenceSpec, generate_capture

DEMO_SPEC = CaptureSpec(capture=0, split="train", num_cameras=16, seed=0, sequences=[
    SequenceSpec("0051_dinosaur", "right", 24), SequenceSpec("0266_dh_pray", "both", 24)])

PACKAGE_PARENT = Path(__file__).resolve().parents[1]


def ensure_demo_data(basedir: Path, mano_dir: Path, progress: bool = True) -> bool:
    """Generate the synthetic model and capture unless the capture folder exists. True if made."""
    if capture_folder(basedir, DEMO_SPEC.split, DEMO_SPEC.capture).is_dir():
        return False
    print(f"generating a synthetic capture in {basedir} (model: {mano_dir}) ...", flush=True)
    generate_capture(basedir, mano_dir, DEMO_SPEC, progress=progress)
    return True


def make_data_only(args) -> int:
    """demo --data-only: a synthetic capture of the asked size (no processing), for rehearsing a
    run (a cluster's) before the real data. An existing capture is never touched without --overwrite."""
    import shutil

    sequences = args.sequences or len(DEMO_SPEC.sequences)
    if not 1 <= sequences <= len(DEMO_SEQUENCES):
        raise InputError(f"--sequences must be 1 to {len(DEMO_SEQUENCES)}, got {sequences}")
    cameras, frames = args.cameras or DEMO_SPEC.num_cameras, args.frames or DEMO_SPEC.sequences[0].num_frames
    if not 1 <= cameras <= 60 or frames < 1:
        raise InputError(f"--cameras must be 1 to 60 and --frames at least 1, got {cameras} and {frames}")
    folder = capture_folder(args.basedir, DEMO_SPEC.split, DEMO_SPEC.capture)
    if folder.exists():
        if not args.overwrite:
            raise InputError(f"{folder} exists; --data-only never touches an existing capture (pass --overwrite to "
                             "replace it)")
        shutil.rmtree(folder)
    spec = CaptureSpec(capture=DEMO_SPEC.capture, split=DEMO_SPEC.split, num_cameras=cameras, seed=DEMO_SPEC.seed,
                       sequences=[SequenceSpec(name, hands, frames) for name, hands in DEMO_SEQUENCES[:sequences]])
    print(f"generating a synthetic capture in {args.basedir} (model: {args.mano_dir}) ...", flush=True)
    generate_capture(args.basedir, args.mano_dir, spec, progress=not args.quiet)
    print(f"{folder}: {sequences} sequence(s) x {cameras} cameras x {frames} frames, synthetic; process it with\n"
          f"  interhand-prep process --capture {DEMO_SPEC.capture} --all --hand-type auto --basedir "
          f"{shlex.quote(str(args.basedir))} --mano-dir {shlex.quote(str(args.mano_dir))}")
    return 0


def read_sequence_list(path: Path) -> list[str]:
    """One sequence name per line; blank lines and # comments are ignored."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the sequence list ({exc.strerror})") from None
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def select_sequences(args, array_task: bool = True) -> list[str]:
    """The sequences to process, each checked to exist before anything is created; under a Slurm
    job array (and `array_task`) only the task's entry."""
    ds = InterHandDataset(args.basedir, args.split)
    try:
        existing = ds.sequences(args.capture)
    except InputError:
        captures = sorted(p.name for p in split_images_folder(ds.basedir, args.split).glob("Capture*"))
        close = difflib.get_close_matches(f"Capture{args.capture}", captures, n=3, cutoff=0.5)
        raise InputError(f"{capture_folder(ds.basedir, args.split, args.capture)}: no such capture"
                         + (f"; closest: {', '.join(close)}" if close else
                            f"; {args.split} has {', '.join(captures) or 'no captures'}")) from None
    if args.all:
        seqs = existing
        others = ds.other_folders(args.capture)
        if others:
            print(f"--all: skipping {len(others)} folder(s) of Capture{args.capture} without cam*/image*.jpg: "
                  + ", ".join(others[:5]) + (" ..." if len(others) > 5 else ""), file=sys.stderr, flush=True)
    elif args.list:
        seqs = read_sequence_list(args.list)
    else:
        seqs = list(args.seqs)
    if not seqs:
        raise InputError("nothing to do: name sequences, or pass --all, --list FILE or --demo")
    unknown = [s for s in seqs if s not in existing]
    if unknown:
        close = difflib.get_close_matches(unknown[0], existing, n=3, cutoff=0.4)
        raise InputError(f"Capture{args.capture} of {args.split} has no sequence {unknown[0]!r}"
                         + (f" ({len(unknown) - 1} more unknown)" if len(unknown) > 1 else "")
                         + (f"; closest: {', '.join(close)}" if close else ""))
    task = os.environ.get("SLURM_ARRAY_TASK_ID") if array_task else None
    if task is not None:
        try:
            index = int(task)
        except ValueError:
            raise InputError(f"SLURM_ARRAY_TASK_ID={task!r} is not an integer") from None
        if not 0 <= index < len(seqs):
            raise InputError(f"SLURM_ARRAY_TASK_ID={index} is outside the {len(seqs)} sequences (use --array=0-{len(seqs) - 1})")
        seqs = [seqs[index]]
    return seqs


RUN_HEADER = "==== run "  # the first line of each run's part of a sequence's log


def run_header(argv: list[str]) -> str:
    """The header a run writes into a sequence's log: when, where (host, Slurm job and task), how."""
    import socket

    slurm = " ".join(f"{name.lower()} {os.environ[key]}" for key, name in
                     (("SLURM_JOB_ID", "job"), ("SLURM_ARRAY_JOB_ID", "array"), ("SLURM_ARRAY_TASK_ID", "task"))
                     if os.environ.get(key))
    return (f"{RUN_HEADER}{time.strftime('%Y-%m-%d %H:%M:%S %z')} on {socket.gethostname()} pid {os.getpid()}"
            + (f" (slurm {slurm})" if slurm else "") + "\n"
            + "  " + shlex.join(argv) + "\n")


def last_run(log_text: str) -> str:
    """The part of a sequence's log written by its last run."""
    return RUN_HEADER + log_text.rsplit(RUN_HEADER, 1)[-1] if RUN_HEADER in log_text else log_text


def _claim_log(path: Path, header: str) -> int | None:
    """Open a sequence's log for this run: locked, then the run's header appended (earlier runs'
    parts are kept). None if another run writes it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.write(fd, (("\n" if os.fstat(fd).st_size else "") + header).encode())
    return fd


class Children:
    """The pipeline processes running now, so that a stop reaches each of them; once stopped, no
    new one starts."""

    def __init__(self):
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self.stopped = False

    def start(self, cmd, **kw) -> subprocess.Popen | None:
        with self._lock:
            if self.stopped:
                return None
            proc = subprocess.Popen(cmd, **kw)
            self._running.add(proc)
            return proc

    def finished(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._running.discard(proc)

    def stop(self, signum: int = signal.SIGINT) -> None:
        """Stop every running child as Ctrl-C does (each finishes the work in hand and writes its report)."""
        with self._lock:
            self.stopped = True
            for proc in self._running:
                if proc.poll() is None:
                    proc.send_signal(signum)


def _interrupted(sel: SequenceSelector, detail: str, seconds: float = 0.0) -> SequenceReport:
    report = SequenceReport(sequence=sel.name)
    report.fail(STAGES[0], detail, seconds, status="interrupted")
    return report


def run_one(args, sel: SequenceSelector, opts: StageOptions, children: Children | None = None) -> SequenceReport:
    """Run all stages of one sequence in a child process; its output goes to the log file."""
    children = children or Children()
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    log = log_path(logs, sel.split, sel.capture, sel.seq)
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "interhand_prep.stages.pipeline", *sel.to_argv(), *opts.to_argv(),
           "--report", str(log.with_suffix(".json")), "--quiet"] + (["--debug"] if args.debug else [])
    fd = _claim_log(log, run_header(["python", *cmd[1:]]))
    if fd is None:
        report = SequenceReport(sequence=sel.name)
        report.fail(STAGES[0], f"another process.sh is running this sequence (it writes {log})")
        return report
    report_file = log.with_suffix(".json")
    report_file.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")])))
    try:
        # a session of its own: a Ctrl-C reaches this process only, which passes one stop to each child
        proc = children.start(cmd, stdout=fd, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL,
                              start_new_session=True)
        if proc is None:
            return _interrupted(sel, "not started: the run was stopped")
        try:
            proc.wait()
        finally:
            children.finished(proc)
    finally:
        os.close(fd)
    if report_file.is_file():
        return SequenceReport.from_json(report_file.read_text())
    # the child died before writing its report (killed, crashed, bad arguments)
    seconds = time.perf_counter() - start
    if proc.returncode in (130, -signal.SIGINT, -signal.SIGTERM, -signal.SIGKILL):
        return _interrupted(sel, f"stopped (exit status {proc.returncode}); see {log}", seconds)
    report = SequenceReport(sequence=sel.name)
    report.fail(STAGES[0], f"exit status {proc.returncode}; see {log}", seconds)
    return report


def format_table(rows: list[tuple[str, SequenceReport]]) -> str:
    header = f"{'sequence':<28} {'frames':>6} {'cams':>4}  " + "  ".join(f"{s:<14}" for s in STAGES) + "  status"
    lines = [header, "-" * len(header)]
    for seq, report in rows:
        cells = []
        for stage in STAGES:
            entry = report.stages[stage]
            cells.append(f"{entry.status} {entry.seconds:.1f}s" if entry.status in ("done", "skipped", "failed")
                         else entry.status)
        status = report.status
        lines.append(f"{seq:<28} {report.frames:>6} {report.cameras:>4}  " + "  ".join(f"{c:<14}" for c in cells)
                     + f"  {status}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# status: where a capture's run stands, from the sequences' logs and reports


def sequence_state(log: Path) -> tuple[str, str, float]:
    """(state, detail, seconds of its stages) of a sequence from its log and report: done, failed
    (with the reason), interrupted, running (a run holds its log), or not started."""
    if not log.exists():
        return "not started", "", 0.0
    fd = os.open(log, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return "running", f"see {log}", 0.0
    finally:
        os.close(fd)
    report_file = log.with_suffix(".json")
    try:
        report = SequenceReport.from_json(report_file.read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return "interrupted", f"its run ended without a report (killed?); see {log}", 0.0
    seconds = sum(entry.seconds for entry in report.stages.values())
    if report.ok:
        return "done", "", seconds
    stopped = next((f"[{name}] {entry.detail}" for name, entry in report.stages.items()
                    if entry.status in ("failed", "interrupted")), "")
    return ("interrupted" if report.interrupted else "failed"), " ".join(stopped.split()), seconds


def print_status(args) -> int:
    """process.sh --status: one row per sequence of the selection, the counts, and the command that
    runs again only what is not done. -> 0 when everything is done, else 1."""
    seqs = select_sequences(args, array_task=False)
    rows = [(i, seq, *sequence_state(log_path(args.logs, args.split, args.capture, seq))) for i, seq in enumerate(seqs)]
    width = max(len("sequence"), *(len(seq) for seq in seqs))
    print(f"{'index':>5}  {'sequence':<{width}}  {'state':<12}  detail")
    for i, seq, state, detail, _ in rows:
        print(f"{i:>5}  {seq:<{width}}  {state:<12}  {detail}")
    if getattr(args, "summary", None):
        lines = ["index\tsequence\tstate\tseconds\treason"] + [
            f"{i}\t{seq}\t{state}\t{seconds:.1f}\t{detail}" for i, seq, state, detail, seconds in rows]
        write_text(args.summary, "\n".join(lines) + "\n")
        print(f"summary: {args.summary}")
    counts = {state: sum(r[2] == state for r in rows) for state in ("done", "failed", "interrupted", "running",
                                                                     "not started")}
    print("\n" + ", ".join(f"{n} {state}" for state, n in counts.items() if n) + f" of {len(rows)} sequence(s)")
    left = [str(i) for i, _, state, _, _ in rows if state not in ("done", "running")]
    if left:
        print(f"not done: array indices {','.join(left)}; to run only those under Slurm:\n"
              f"  sbatch --array={','.join(left)} --output={shlex.quote(str(args.logs))}/slurm-%A_%a.out --wrap "
              f"{shlex.quote(shlex.join(process_command(args, seqs)))}")
    return 0 if counts["done"] == len(rows) else 1


def process_command(args, seqs: list[str], command: str = "process") -> list[str]:
    """The command that runs (process) or reports on (status) the same selection with the same
    options, from any folder: absolute paths, this interpreter."""
    selection = ["--all"] if args.all else ["--list", str(args.list)] if args.list else list(args.seqs)
    shared = to_argv(selector_from_args(args, seq=seqs[0]).replace(capture=None, seq=None))  # basedir, hands, ...
    return [sys.executable, "-m", "interhand_prep", command, *selection, "--capture", str(args.capture), *shared,
            "--logs", str(args.logs), *StageOptions.from_args(args).to_argv(), "--quiet"]


def submit(args) -> int:
    """process.sh --submit: one Slurm array over the selected sequences (a task each, its output in
    the log folder), and an `afterany` job writing <logs>/summary_<array job id>.tsv. The batch
    scripts are written beside the logs; --dry-run prints them and submits nothing."""
    import shutil

    seqs = select_sequences(args, array_task=False)
    logs = Path(args.logs)
    array = f"0-{len(seqs) - 1}" + (f"%{args.max_parallel}" if args.max_parallel else "")
    extra = shlex.split(args.sbatch or "")
    script = "\n".join([
        "#!/bin/bash",
        f"#SBATCH --job-name=interhand-prep-Capture{args.capture}",
        f"#SBATCH --array={array}",
        f"#SBATCH --output={logs}/slurm-%A_%a.out",
        *(f"#SBATCH {a}" for a in extra),
        f"# {len(seqs)} sequence(s) of {args.split}/Capture{args.capture}; task i processes the i-th of:",
        *(f"#   {i} {seq}" for i, seq in enumerate(seqs)),
        "exec " + shlex.join(process_command(args, seqs)),
        ""])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    script_path = logs / f"submit_{stamp}.sbatch"
    if args.dry_run:
        print(f"# {script_path} (not written: --dry-run)\n{script}")
        return 0
    if shutil.which("sbatch") is None:
        raise InputError("sbatch not found: --submit needs a Slurm client on this machine (or use --dry-run)")
    _check_cpus_per_task(extra)
    logs.mkdir(parents=True, exist_ok=True)
    write_text(script_path, script)
    job = _sbatch(["--parsable", str(script_path)])
    summary = logs / f"summary_{job}.tsv"
    status = process_command(args, seqs, "status") + ["--summary", str(summary)]
    summary_job = _sbatch(["--parsable", f"--dependency=afterany:{job}", "--job-name=interhand-prep-summary",
                           f"--output={logs}/slurm-%j.out", *[a for a in extra if a.startswith(("-p", "--partition",
                                                                                                 "-A", "--account"))],
                           "--wrap", shlex.join(status) + " || true"])
    print(f"submitted array job {job} ({len(seqs)} task(s), script {script_path}) and summary job {summary_job} "
          f"(writes {summary} when the array ends)\nfollow them with:\n  squeue -j {job},{summary_job}\n"
          f"  {shlex.join(process_command(args, seqs, 'status'))}")
    return 0


def _check_cpus_per_task(sbatch_args: list[str]) -> None:
    """Refuse a --cpus-per-task that no node of the cluster has: Slurm would keep the tasks pending
    without a word."""
    import re

    asked = None
    for k, arg in enumerate(sbatch_args):
        match = re.fullmatch(r"(?:--cpus-per-task|-c)=?(\d*)", arg)
        if match:
            value = match.group(1) or (sbatch_args[k + 1] if k + 1 < len(sbatch_args) else "")
            asked = int(value) if value.isdigit() else None
    if asked is None:
        return
    proc = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True)
    counts = [int(v.rstrip("+")) for v in proc.stdout.split() if v.rstrip("+").isdigit()]
    if proc.returncode == 0 and counts and asked > max(counts):
        raise InputError(f"--cpus-per-task={asked}: the largest node of this cluster has {max(counts)} CPUs, so the "
                         "tasks would stay pending; ask for fewer")


def _sbatch(argv: list[str]) -> str:
    """Run sbatch; -> the job id (--parsable), or a one-line error with sbatch's own message."""
    proc = subprocess.run(["sbatch", *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise InputError(f"sbatch refused the job: {' '.join((proc.stderr or proc.stdout).split())}")
    return proc.stdout.strip().split(";")[0]


def _absolute(path: Path | None) -> Path | None:
    """Relative paths mean the caller's current folder, whatever folder a child runs in."""
    return None if path is None else Path(os.path.abspath(path))


def _location_flags(args) -> str:
    """The options that find the sequences again, when not at their defaults (for hints)."""
    flags = [("--split", args.split, "train"), ("--out-root", args.out_root, None)]
    if Path(args.basedir).resolve() != DEFAULT_BASEDIR.resolve():
        flags.append(("--basedir", args.basedir, None))
    return "".join(f" {flag} {shlex.quote(str(value))}" for flag, value, default in flags if value != default)


def main(args) -> int:
    if args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {args.jobs}")
    args.basedir, args.mano_dir = _absolute(args.basedir), _absolute(args.mano_dir)
    args.out_root, args.logs = _absolute(args.out_root), _absolute(args.logs)
    if args.logs is None:  # beside the data: runs on other data never share a log
        args.logs = (args.out_root or args.basedir) / "logs"
    if args.cameras_csv is not None:
        args.cameras_csv = _absolute(args.cameras_csv)
    if getattr(args, "data_only", False):
        return make_data_only(args)
    if getattr(args, "status", False):
        return print_status(args)
    if getattr(args, "submit", False):
        return submit(args)
    if args.demo:
        ensure_demo_data(args.basedir, args.mano_dir, progress=not args.quiet)
        args.all, args.capture, args.split = True, DEMO_SPEC.capture, DEMO_SPEC.split
    seqs = select_sequences(args)
    opts = StageOptions.from_args(args)
    base = selector_from_args(args, seq=seqs[0])
    print(f"processing {len(seqs)} sequence(s) of {args.split}/Capture{args.capture} with {args.jobs} job(s); "
          f"logs in {args.logs}/", flush=True)
    results: dict[str, SequenceReport] = {}
    children = Children()

    def job(seq: str) -> None:
        results[seq] = report = run_one(args, base.replace(seq=seq), opts, children)
        print(f"  {seq}: {report.status} ({log_path(args.logs, args.split, args.capture, seq)})", flush=True)

    pool = ThreadPoolExecutor(args.jobs)
    jobs = [pool.submit(job, seq) for seq in seqs]
    stopped = False
    while True:
        try:
            for j in jobs:
                j.result()
            break
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop the children, wait for their reports
            if not stopped:
                print("stopping: the running sequences finish the work in hand ...", file=sys.stderr, flush=True)
            stopped = True
            children.stop()
    pool.shutdown(wait=True)
    rows = [(seq, results.get(seq) or _interrupted(base.replace(seq=seq), "not started: the run was stopped"))
            for seq in seqs]
    print()
    print(format_table(rows))
    for seq, report in rows:
        for stage, entry in report.stages.items():
            if entry.status in ("failed", "interrupted"):
                print(f"{seq} [{stage}]: {entry.detail}")
    failed = [seq for seq, report in rows if not report.ok]
    if stopped or any(report.interrupted for _, report in rows):
        print(f"\nStopped: {sum(r.interrupted for _, r in rows)} sequence(s) interrupted; run the same command "
              "again to finish them (finished work is kept).")
        return 130
    if args.demo and not failed:
        from .gif import make_capture_gifs

        refined = opts.run_refine_masks
        gifs = make_capture_gifs(args.basedir, args.split, args.capture, out_root=args.out_root,
                                 overlay="refined" if refined else "mano", progress=not args.quiet)
        root = base.replace(seq=seqs[0]).layout.root
        outputs = ("annots.npy, cams.txt, frames.txt, params/, vertices/, lbs/, mask/, depth/, "
                   + ("parts/, parts.json, " if opts.render.parts else "")
                   + ("mask_cihp/, mask_quality.csv, " if refined else "") + "fit_quality.csv, prep.json")
        print(f"\nDemo done. Look at:\n  {root}/  ({outputs})\n"
              f"  {gifs[0].parent.parent}/  ({len(gifs)} GIFs, {'refined' if refined else 'MANO'} masks tinted over "
              "the images)\n"
              f"To export a sequence for nerfstudio (or EasyMocap, with --format easymocap):\n"
              f"  interhand-prep export --capture {args.capture} --seq {shlex.quote(seqs[0])} --format nerfstudio"
              f"{_location_flags(args)}")
    return 1 if failed else 0

