#!/usr/bin/env python
"""Frames per second of prepare_blend_weights on 100 frames of the benchmark capture.

    python benchmarks/bench_blend_weights.py [--voxels 0.025 0.005] [--hand-type right]

Runs get_annots once (into --workdir/lbs_out), then times the stage in-process (grids, closest-
point queries and all writes; interpreter start and imports excluded) into an empty lbs/ at each
voxel size.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

from common import SEQ, ensure_capture, parser, peak_rss_mb

from interhand_prep.core.options import BlendWeightOptions
from interhand_prep.core.selection import SequenceSelector
from interhand_prep.stages import get_annots as annots
from interhand_prep.stages import prepare_blend_weights as blend_weights


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--voxels", type=float, nargs="+", default=[0.025, 0.005])
    p.add_argument("--hand-type", default="right", choices=["right", "left", "both"])
    p.add_argument("--repeat", type=int, default=5, help="runs per voxel size (the median is reported)")
    args = p.parse_args()
    basedir, mano_dir = ensure_capture(args.workdir, args.cameras, args.frames)
    out = args.workdir / "lbs_out"
    shutil.rmtree(out, ignore_errors=True)
    sel = SequenceSelector(capture=0, seq=SEQ, basedir=basedir, mano_dir=mano_dir, hand_type=args.hand_type,
                           out_root=out)
    frames = len(annots.run(sel, progress=False).frames)
    blend_weights.run(sel, BlendWeightOptions(voxel_size=0.05), progress=False)  # warm imports
    for voxel in args.voxels:
        times = []
        for _ in range(args.repeat if voxel >= 0.01 else 1):
            shutil.rmtree(sel.layout.root / "lbs")  # every grid missing: all are computed and written
            start = time.perf_counter()
            result = blend_weights.run(sel, BlendWeightOptions(voxel_size=voxel), progress=False)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        grids = sum(result.written.values())
        size = sum(f.stat().st_size for f in Path(sel.layout.root / "lbs").rglob("*.npy")) / 2**20
        shape = next(iter(result.grid_shape.values()))
        print(f"voxel {voxel:.3f} m: {grids} frame grids ({frames} frames x {len(sel.fixed_hands)} hand(s)) in {seconds:.2f} s "
              f"(median of {len(times)}) = {grids / seconds:.0f} frames/s; canonical grid {shape}; lbs/ {size:.0f} MB; "
              f"peak RSS {peak_rss_mb():.0f} MB")

if __name__ == "__main__":
    main()
