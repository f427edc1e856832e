"""process.sh: run every stage over many sequences, in parallel, resumably; and the demo.

Each sequence runs in its own process (`python -m interhand_prep.pipeline`) logging to
logs/<split>_Capture<N>_<seq>.log, so one failing sequence never stops the others. Under a Slurm
job array (SLURM_ARRAY_TASK_ID set) only that entry of the sequence list is processed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .cli import add_common_options, run_main
from .dataset import InterHandDataset
from .errors import InputError
from .pipeline import STAGES, SequenceReport, StageReport
from .synthetic_capture import CaptureSpec, SequenceSpec, generate_capture

DEMO_SPEC = CaptureSpec(capture=0, split="train", num_cameras=16, seed=0, sequences=[
    SequenceSpec("0051_dinosaur", "right", 24), SequenceSpec("0266_dh_pray", "both", 24)])
REPO = Path(__file__).resolve().parents[1]


def ensure_demo_data(basedir: Path, mano_dir: Path) -> bool:
    """Generate the synthetic model and capture unless the capture folder exists. True if made."""
    if (basedir / "images" / DEMO_SPEC.split / f"Capture{DEMO_SPEC.capture}").is_dir():
        return False
    print(f"generating a synthetic capture in {basedir} (model: {mano_dir}) ...", flush=True)
    generate_capture(basedir, mano_dir, DEMO_SPEC, progress=True)
    return True


def read_sequence_list(path: Path) -> list[str]:
    """One sequence name per line; blank lines and # comments are ignored."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the sequence list ({exc.strerror})") from None
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def select_sequences(args) -> list[str]:
    if args.all:
        seqs = InterHandDataset(args.basedir, args.split).sequences(args.capture)
    elif args.list:
        seqs = read_sequence_list(args.list)
    else:
        seqs = list(args.seqs)
    if not seqs:
        raise InputError("nothing to do: name sequences, or pass --all, --list FILE or --demo")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    if task is not None:
        try:
            index = int(task)
        except ValueError:
            raise InputError(f"SLURM_ARRAY_TASK_ID={task!r} is not an integer") from None
        if not 0 <= index < len(seqs):
            raise InputError(f"SLURM_ARRAY_TASK_ID={index} is outside the {len(seqs)} sequences (use --array=0-{len(seqs) - 1})")
        seqs = [seqs[index]]
    return seqs


def log_path(logs: Path, split: str, capture: int, seq: str) -> Path:
    return logs / f"{split}_Capture{capture}_{seq}.log"


def run_one(args, seq: str) -> SequenceReport:
    """Run all stages of one sequence in a child process; its output goes to the log file."""
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    log = log_path(logs, args.split, args.capture, seq)
    report_file = log.with_suffix(".json")
    report_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "interhand_prep.pipeline", "--capture", str(args.capture), "--seq", seq,
           "--split", args.split, "--basedir", str(args.basedir), "--mano-dir", str(args.mano_dir),
           "--hand-type", args.hand_type, "--report", str(report_file), "--quiet"]
    if args.out_root:
        cmd += ["--out-root", str(args.out_root)]
    if args.overwrite:
        cmd += ["--overwrite"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
    if report_file.is_file():
        return SequenceReport.from_json(report_file.read_text())
    # the child died before writing its report (killed, crashed, bad arguments)
    report = SequenceReport(sequence=f"{args.split}/Capture{args.capture}/{seq}")
    report.stages[STAGES[0]] = StageReport("failed", time.perf_counter() - start, f"exit status {proc.returncode}; see {log}")
    for stage in STAGES[1:]:
        report.stages[stage].status = "not run"
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
        status = "ok" if report.ok else "FAILED"
        lines.append(f"{seq:<28} {report.frames:>6} {report.cameras:>4}  " + "  ".join(f"{c:<14}" for c in cells)
                     + f"  {status}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="process.sh", description="Run all stages over sequences of a capture.")
    parser.add_argument("seqs", nargs="*", help="sequence names")
    parser.add_argument("--capture", type=int, default=0, help="capture number (default: 0)")
    parser.add_argument("--all", action="store_true", help="every sequence of the capture")
    parser.add_argument("--list", type=Path, help="a file with one sequence name per line")
    parser.add_argument("--jobs", type=int, default=1, help="sequences processed in parallel (default: 1)")
    parser.add_argument("--logs", type=Path, default=Path("logs"), help="log folder (default: logs)")
    parser.add_argument("--demo", action="store_true",
                        help="generate a synthetic capture under data/ if absent, process all of it, make GIFs")
    add_common_options(parser)
    return parser


def main(args) -> int:
    if args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {args.jobs}")
    if args.demo:
        ensure_demo_data(args.basedir, args.mano_dir)
        args.all, args.capture, args.split = True, DEMO_SPEC.capture, DEMO_SPEC.split
    seqs = select_sequences(args)
    print(f"processing {len(seqs)} sequence(s) of {args.split}/Capture{args.capture} with {args.jobs} job(s); "
          f"logs in {args.logs}/", flush=True)
    results: dict[str, SequenceReport] = {}

    def job(seq: str) -> None:
        results[seq] = report = run_one(args, seq)
        print(f"  {seq}: {'ok' if report.ok else 'FAILED'} ({log_path(args.logs, args.split, args.capture, seq)})",
              flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(job, seqs))
    rows = [(seq, results[seq]) for seq in seqs]
    print()
    print(format_table(rows))
    for seq, report in rows:
        for stage, entry in report.stages.items():
            if entry.status == "failed":
                print(f"{seq} [{stage}]: {entry.detail}")
    failed = [seq for seq, report in rows if not report.ok]
    if args.demo and not failed:
        from .gifs import make_capture_gifs

        gifs = make_capture_gifs(args.basedir, args.split, args.capture, out_root=args.out_root, overlay=True,
                                 progress=not args.quiet)
        from .layout import SequenceLayout

        root = SequenceLayout.for_sequence(args.basedir, args.split, args.capture, seqs[0], args.out_root).root
        print(f"\nDemo done. Look at:\n  {root}/  (annots.npy, params/, vertices/, lbs/, mask/, depth/)\n"
              f"  {gifs[0].parent.parent}/  ({len(gifs)} GIFs, masks tinted over the images)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_main(build_parser(), main))
