#!/usr/bin/env python
"""Views per second of the whole `interhand-prep refine-masks` command on a fit_error capture (not run in CI).

    python benchmarks/bench_refine_speed.py [--cameras 40] [--frames 100] [--hands right] [--repeat 3]
                                            [--refine-workers 0] [--generate-workers 0] [--copy-to DIR]
                                            [--workdir /tmp/interhand_prep_bench]

Generates once under --workdir a synthetic capture of one sequence with the fit_error appearance
(interhand_prep.synthetic: a true hand off the annotated MANO fit, forearm, sleeve, patterned shirt;
--hands right, left or both), every case kept (no black frames, no missing images), and runs
`interhand-prep get-annots` and `render-mesh --depth-format none` on it with their defaults, as a
user would (landscape cameras left out: 36 of the 40 cameras, 3,600 views, kept). Then times the whole
`interhand-prep refine-masks --overwrite` command (interpreter start-up, planning, workers, the
table: every view redone each run), --repeat times, and prints per run the 1-minute load average
before it, the views it refined, its seconds and views/s = views / wall seconds, then the median.
--copy-to DIR copies the last run's mask_cihp/ and mask_quality.csv there (to compare outputs
of two versions byte for byte).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import parser

from interhand_prep.synthetic.capture import CaptureSpec, SequenceSpec, generate_capture
from interhand_prep.synthetic.hand import write_synthetic_mano

SEQUENCES = {"right": "0051_dinosaur", "left": "0007_thumbup_normal", "both": "0266_dh_pray"}
SEED = 11
# commands run as Python runs by default: with its bytecode cache
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def ensure_capture(workdir: Path, num_cameras: int, num_frames: int, hands: str, workers: int = 0
                   ) -> tuple[Path, Path]:
    """(basedir, mano_dir) of the capture, generated if absent (by `workers` processes, 0: one per core)."""
    root = workdir / f"refine_speed_c{num_cameras}_f{num_frames}_{hands}_s{SEED}"
    basedir, mano_dir = root / "IH", root / "mano"
    marker = root / "complete"
    if not marker.exists():
        print(f"generating {num_cameras} cameras x {num_frames} frames ({hands}, fit_error) in {root} (once) ...",
              flush=True)
        start = time.perf_counter()
        spec = CaptureSpec(capture=0, split="train", num_cameras=num_cameras, seed=SEED, default_cases=False,
                           appearance="fit_error", sequences=[SequenceSpec(SEQUENCES[hands], hands, num_frames)],
                           render_workers=workers)
        generate_capture(basedir, mano_dir, spec, progress=True)
        marker.write_text("ok\n")
        print(f"generated in {time.perf_counter() - start:.1f} s", flush=True)
    write_synthetic_mano(mano_dir)
    return basedir, mano_dir


def command(name: str, basedir: Path, mano_dir: Path, out: Path, seq: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "interhand_prep", name, "--capture", "0", "--seq", seq, "--basedir", str(basedir),
            "--mano-dir", str(mano_dir), "--out-root", str(out), "--hand-type", "auto", "--quiet", *extra]


def run(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=ENV)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    return seconds, proc.stdout


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--hands", default="right", choices=sorted(SEQUENCES))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--refine-workers", type=int, default=0,
                   help="refine-masks --refine-workers (default 0: one per CPU)")
    p.add_argument("--generate-workers", type=int, default=0,
                   help="processes that generate the capture the first time (default 0: one per core)")
    p.add_argument("--copy-to", type=Path, help="copy the last run's mask_cihp/ and mask_quality.csv here")
    args = p.parse_args()
    if args.repeat < 1:
        p.error("--repeat must be 1 or more")
    basedir, mano_dir = ensure_capture(args.workdir, args.cameras, args.frames, args.hands,
                                       args.generate_workers)
    seq = SEQUENCES[args.hands]
    out = basedir.parent / "out"
    root = out / "train" / "Capture0" / seq
    if not (root / "mask").is_dir():
        shutil.rmtree(out, ignore_errors=True)
        for name, extra in (("get-annots", ()), ("render-mesh", ("--depth-format", "none"))):
            seconds, _ = run(command(name, basedir, mano_dir, out, seq, *extra))
            print(f"{name}: {seconds:.1f} s", flush=True)
    refine = command("refine-masks", basedir, mano_dir, out, seq, "--overwrite",
                     "--refine-workers", str(args.refine_workers))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}", flush=True)
    rates, loads = [], []
    for i in range(args.repeat):
        load = os.getloadavg()[0]
        seconds, text = run(refine)
        views = int(re.search(r"(\d+) views refined", text).group(1))
        rates.append(views / seconds)
        loads.append(load)
        print(f"run {i + 1}: load {load:.2f}, {views} views, {seconds:.2f} s, {views / seconds:.1f} views/s",
              flush=True)
    print(f"refine-masks, {args.cameras} cameras x {args.frames} frames ({args.hands}), whole command: median "
          f"{statistics.median(rates):.1f} views/s over {args.repeat} runs (1-minute load before the runs "
          f"{min(loads):.2f}-{max(loads):.2f}, after {os.getloadavg()[0]:.2f})")
    if args.copy_to:
        shutil.rmtree(args.copy_to, ignore_errors=True)
        shutil.copytree(root / "mask_cihp", args.copy_to / "mask_cihp")
        shutil.copy2(root / "mask_quality.csv", args.copy_to / "mask_quality.csv")


if __name__ == "__main__":
    main()
