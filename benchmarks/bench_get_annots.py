#!/usr/bin/env python
"""Time get_annots.py on a synthetic capture of 40 cameras x 100 frames, both hands.

    python benchmarks/bench_get_annots.py [--workdir /tmp/interhand_prep_bench] [--repeat 3]

Times the whole command (interpreter start, torch import and all) as a user runs it, writing
to a fresh --out-root each time (so nothing is skipped). Target: under 5 s on 2 cores.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import SEQ, ensure_capture, parser, peak_rss_mb

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    basedir, mano_dir = ensure_capture(args.workdir, args.cameras, args.frames)
    times = []
    for k in range(args.repeat):
        out = args.workdir / "annots_out"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, str(REPO / "get_annots.py"), "--capture", "0", "--seq", SEQ, "--hand-type", "both",
               "--basedir", str(basedir), "--mano-dir", str(mano_dir), "--out-root", str(out), "--quiet"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            sys.exit(proc.stderr)
        if k == 0:
            print(proc.stdout)
    print(f"get_annots.py, {args.cameras} cameras x {args.frames} frames, both hands, {os.cpu_count()} cores: "
          f"median {statistics.median(times):.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)}), "
          f"peak RSS {peak_rss_mb(children=True):.0f} MB")


if __name__ == "__main__":
    main()
