#!/usr/bin/env python
"""Views per second of render_mesh on the benchmark capture (40 cameras x 100 frames, both hands).

    python benchmarks/bench_render.py [--backend auto] [--workers 0] [--depth-format npy]

Runs get_annots (both hands) once, then renders every kept view with --overwrite, masks and
depth written, and reports views/s and peak memory (this process and its workers).
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
    args = p.parse_args()
    basedir, mano_dir = ensure_capture(args.workdir, args.cameras, args.frames)
    out = args.workdir / "render_out"
    shutil.rmtree(out, ignore_errors=True)
    sel = SequenceSelector(capture=0, seq=SEQ, basedir=basedir, mano_dir=mano_dir, hand_type="both", out_root=out)
    annots.run(sel, progress=False)
    sel = sel.replace(overwrite=True)
    opts = RenderOptions(backend=args.backend, render_workers=args.workers, depth_format=args.depth_format)
    start = time.perf_counter()
    result = render_mesh.run(sel, opts, progress=False)
    seconds = time.perf_counter() - start
    written = sum(f.stat().st_size for d in ("mask", "depth") for f in (sel.layout.root / d).rglob("*.*")) / 2**20
    print(result.summary())
    print(f"render_mesh: {result.rendered} views ({result.cameras} cameras x {result.frames} frames, both hands, "
          f"depth {args.depth_format}) in {seconds:.2f} s = {result.rendered / seconds:.0f} views/s; backend "
          f"{result.backend}, {result.workers} workers; {written:.0f} MB written; peak RSS parent "
          f"{peak_rss_mb():.0f} MB, largest worker {peak_rss_mb(children=True):.0f} MB")


if __name__ == "__main__":
    main()
