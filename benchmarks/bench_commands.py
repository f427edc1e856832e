#!/usr/bin/env python
"""The three stages timed as users run them: whole commands (interpreter start-up included),
median of several runs, each into a fresh --out-root so nothing is skipped; plus `--help` and a
no-op rerun of a finished sequence per stage script; and export.py of the rendered 40 x 100 sequence.

    python benchmarks/bench_commands.py [--repeat 3] [--workdir /tmp/interhand_prep_bench]

Captures (synthetic, generated once into --workdir, right hand, as in the reference figures):
    get_annots      40 cameras x 100 frames
    prepare_blend_weights   4 cameras x 300 frames
    render_mesh     20 cameras x 30 frames (whole command), 40 cameras x 100 frames (per view)
The reference figures are those of the original pipeline's scripts on a 2-core machine (OSMesa);
the ratio is reference / ours. The machine's load average is printed before and after.
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

from common import SEQ, ensure_capture, parser

REPO = Path(__file__).resolve().parents[1]
REFERENCE = {"get_annots": 4.6, "prepare_blend_weights": 3.5, "render_mesh 20x30": 99.0, "render per view": 0.165}


# Commands run as Python runs by default: with its bytecode cache (some machines set
# PYTHONDONTWRITEBYTECODE, which makes every start-up compile the sources again).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run(cmd: list[str], cwd: Path | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, stdin=subprocess.DEVNULL, env=ENV)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    return seconds, proc.stdout


def stage(script: str, basedir: Path, mano_dir: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / script), "--capture", "0", "--seq", SEQ, "--basedir", str(basedir),
            "--mano-dir", str(mano_dir), "--out-root", str(out), "--quiet", *extra]


def timed(label: str, make_cmd, prepare, repeat: int) -> tuple[float, list[float], str]:
    """Median of `repeat` runs of make_cmd(), with prepare() before each (not timed)."""
    times, output = [], ""
    for _ in range(repeat):
        prepare()
        seconds, output = run(make_cmd())
        times.append(seconds)
    median = statistics.median(times)
    print(f"  {label}: median {median:.2f} s  (runs {', '.join(f'{t:.2f}' for t in times)})", flush=True)
    return median, times, output


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--backend", default="auto", choices=["auto", "egl", "osmesa"])
    args = p.parse_args()
    work = args.workdir
    big = ensure_capture(work, 40, 100)
    small = ensure_capture(work, 20, 30)
    long = ensure_capture(work, 4, 300)
    run([sys.executable, str(REPO / "render_mesh.py"), "--help"])  # warm the bytecode cache
    load_before = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; load average before {load_before[0]:.2f}", flush=True)
    rows = {}

    # get_annots, 40 x 100
    out = work / "out_annots"
    median, _, _ = timed("get_annots 40x100", lambda: stage("get_annots.py", *big, out),
                         lambda: shutil.rmtree(out, ignore_errors=True), args.repeat)
    rows["get_annots"] = median

    # prepare_blend_weights, 300 frames (get_annots done once, not timed)
    out = work / "out_lbs"
    shutil.rmtree(out, ignore_errors=True)
    run(stage("get_annots.py", *long, out))
    lbs = out / "train" / "Capture0" / SEQ / "lbs"
    median, _, text = timed("prepare_blend_weights 300 frames", lambda: stage("prepare_blend_weights.py", *long, out),
                            lambda: shutil.rmtree(lbs, ignore_errors=True), args.repeat)
    rows["prepare_blend_weights"] = median

    # render_mesh, 20 x 30, whole command
    out = work / "out_render_small"
    shutil.rmtree(out, ignore_errors=True)
    run(stage("get_annots.py", *small, out))
    root = out / "train" / "Capture0" / SEQ

    def clear_render(folder: Path = root) -> None:
        for name in ("mask", "depth"):  # every view missing: all are rendered
            shutil.rmtree(folder / name, ignore_errors=True)

    median, _, text = timed("render_mesh 20x30 (whole command)",
                            lambda: stage("render_mesh.py", *small, out, "--backend", args.backend), clear_render,
                            args.repeat)
    views = int(re.search(r"(\d+) views rendered", text).group(1))
    rows["render_mesh 20x30"] = median
    small_views = views

    # render_mesh, 40 x 100: per view
    out = work / "out_render_big"
    shutil.rmtree(out, ignore_errors=True)
    run(stage("get_annots.py", *big, out))
    big_root = out / "train" / "Capture0" / SEQ

    median, times, text = timed("render_mesh 40x100 (whole command)",
                                lambda: stage("render_mesh.py", *big, out, "--backend", args.backend),
                                lambda: clear_render(big_root), args.repeat)
    views = int(re.search(r"(\d+) views rendered", text).group(1))
    stage_rate = float(re.search(r"rendering (\d+) views/s after start-up", text).group(1))
    rows["render per view"] = median / views
    print(f"    {views} views; {1000 * median / views:.2f} ms a view whole command "
          f"({views / median:.0f} views/s), {1000 / stage_rate:.2f} ms in-process ({stage_rate:.0f} views/s)")

    # export of the rendered 40 x 100 sequence (links; nerfstudio also writes the depth in mm)
    export_times = {}
    for fmt in ("easymocap", "nerfstudio"):
        export_dir = big_root / "export" / fmt
        export_cmd = [sys.executable, str(REPO / "export.py"), "--capture", "0", "--seq", SEQ, "--basedir",
                      str(big[0]), "--out-root", str(out), "--format", fmt, "--quiet"]
        export_times[fmt], _, _ = timed(f"export {fmt} 40x100 (whole command)", lambda: export_cmd,
                                        lambda: shutil.rmtree(export_dir, ignore_errors=True), args.repeat)

    # start-up: --help and no-op reruns of finished sequences
    help_s = statistics.median(run([sys.executable, str(REPO / "render_mesh.py"), "--help"])[0] for _ in range(5))
    noop = {}
    for script, data, folder in (("get_annots.py", big, work / "out_render_big"),
                                 ("render_mesh.py", big, work / "out_render_big"),
                                 ("prepare_blend_weights.py", long, work / "out_lbs")):
        noop[script] = statistics.median(run(stage(script, *data, folder))[0] for _ in range(5))
    load_after = os.getloadavg()

    print("\n| stage, synthetic capture | reference | ours (median) | ratio |")
    print("|---|---|---|---|")
    print(f"| get_annots, 40 cameras x 100 frames (whole command) | {REFERENCE['get_annots']} s | "
          f"{rows['get_annots']:.2f} s | {REFERENCE['get_annots'] / rows['get_annots']:.1f}x |")
    print(f"| prepare_blend_weights, 4 cameras x 300 frames (whole command) | {REFERENCE['prepare_blend_weights']} s | "
          f"{rows['prepare_blend_weights']:.2f} s | "
          f"{REFERENCE['prepare_blend_weights'] / rows['prepare_blend_weights']:.1f}x |")
    print(f"| render_mesh, 20 x 30 ({small_views} kept views), whole command | {REFERENCE['render_mesh 20x30']:.0f} s | "
          f"{rows['render_mesh 20x30']:.2f} s | {REFERENCE['render_mesh 20x30'] / rows['render_mesh 20x30']:.1f}x |")
    per_view = rows["render per view"]
    print(f"| render_mesh, 40 x 100 ({views} kept views), per view, whole command | 165 ms | "
          f"{1000 * per_view:.2f} ms = {1 / per_view:.0f} views/s | {REFERENCE['render per view'] / per_view:.1f}x |")
    print(f"| the same, in-process (after start-up) | 165 ms | {1000 / stage_rate:.2f} ms = {stage_rate:.0f} views/s | "
          f"{REFERENCE['render per view'] * stage_rate:.1f}x |")
    print(f"\nrender_mesh.py --help: {help_s:.2f} s; no-op reruns of a finished sequence: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in noop.items()))
    print("export of the 40 x 100 sequence, whole command: "
          + ", ".join(f"{fmt} {t:.2f} s ({1000 * t / views:.2f} ms a view)" for fmt, t in export_times.items()))
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1-minute)")


if __name__ == "__main__":
    main()
