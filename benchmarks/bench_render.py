#!/usr/bin/env python
"""Views per second of render_mesh on the benchmark capture (40 cameras x 100 frames, both hands).

    python benchmarks/bench_render.py [--backend auto] [--workers 0] [--depth-format npy] [--parts] [--repeat 3]

Runs get_annots (both hands) once, then renders every kept view (masks and depth written) in this
process, several times, and reports the median run's views/s, overall and after start-up, and
peak memory (this process and its workers).
"""

from __future__ import annotations

import shutil
import time

from common import SEQ, ensure_capture, parser, peak_rss_mb

from interhand_prep.core.options import RenderOptions
from interhand_prep.core.selection import SequenceSelector
from interhand_prep.stages import get_annots as annots
from interhand_prep.stages import render_mesh


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="auto", choices=["auto", "egl", "osmesa"])
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--depth-format", default="npy", choices=["npy", "png16", "none"])
    p.add_argument("--parts", action="store_true", help="part labels too (render-mesh --parts)")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    basedir, mano_dir = ensure_capture(args.workdir, args.cameras, args.frames)
    out = args.workdir / "render_out"
    shutil.rmtree(out, ignore_errors=True)
    sel = SequenceSelector(capture=0, seq=SEQ, basedir=basedir, mano_dir=mano_dir, hand_type="both", out_root=out)
    annots.run(sel, progress=False)
    opts = RenderOptions(backend=args.backend, render_workers=args.workers, depth_format=args.depth_format,
                         parts=args.parts)
    kinds = ("mask", "depth", "parts")
    runs = []
    for _ in range(args.repeat):
        for name in kinds:  # every view missing: all are rendered
            shutil.rmtree(sel.layout.root / name, ignore_errors=True)
        start = time.perf_counter()
        result = render_mesh.run(sel, opts, progress=False)
        runs.append((time.perf_counter() - start, result.steady_views / max(result.steady_seconds, 1e-9), result))
    seconds, steady, result = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    written = sum(f.stat().st_size for d in kinds for f in (sel.layout.root / d).rglob("*.*")) / 2**20
    print(result.summary())
    print(f"render_mesh in-process, median of {args.repeat}: {result.rendered} views ({result.cameras} cameras x "
          f"{result.frames} frames, both hands, depth {args.depth_format}{', part labels' if args.parts else ''}) in {seconds:.2f} s = "
          f"{result.rendered / seconds:.0f} views/s ({steady:.0f} views/s after start-up); backend {result.backend}, "
          f"{result.workers} workers; {written:.0f} MB written; peak RSS parent {peak_rss_mb():.0f} MB, largest "
          f"worker {peak_rss_mb(children=True):.0f} MB")


if __name__ == "__main__":
    main()
