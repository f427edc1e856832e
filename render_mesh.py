#!/usr/bin/env python
"""A hand mask and a depth map for every camera view, rendered from the MANO mesh (pyrender offscreen).

    python render_mesh.py --capture 0 --seq 0051_dinosaur [--backend auto] [--depth-format npy] [--workers N]
"""

import argparse
import sys

from interhand_prep.cli import add_sequence_options, run_main, selector_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="render_mesh.py", description=__doc__.split("\n\n")[0])
    add_sequence_options(parser)
    parser.add_argument("--backend", default="auto", choices=["auto", "egl", "osmesa"],
                        help="OpenGL platform; auto: EGL if it works, else OSMesa (default: auto)")
    parser.add_argument("--depth-format", "--depth_format", dest="depth_format", default="npy",
                        choices=["npy", "png16", "none"],
                        help="npy: float32 (H,W,1) metres; png16: uint16 in 0.1 mm; none: masks only (default: npy)")
    parser.add_argument("--all-cameras", "--all_cameras", dest="all_cameras", action="store_true",
                        help="also render the cameras get_annots.py filtered out (landscape ones at their own size)")
    parser.add_argument("--workers", type=int, default=0, help="worker processes over cameras (default: one per core)")
    return parser


def main(args) -> int:
    from interhand_prep import render_mesh

    opts = render_mesh.RenderOptions(backend=args.backend, depth_format=args.depth_format,
                                     all_cameras=args.all_cameras, workers=args.workers)
    result = render_mesh.run(selector_from_args(args), opts, progress=not args.quiet)
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(run_main(build_parser(), main))
