#!/usr/bin/env python
"""GIF previews of every processed sequence of a capture (optionally with the masks tinted over).

    python gif.py --capture 0 [--cam 400002] [--fps 30] [--stride 1] [--max-width 256] [--overlay]
"""

import argparse
import sys
from pathlib import Path

from interhand_prep.cli import add_runtime_flags, run_main
from interhand_prep.options import DEFAULT_BASEDIR, SPLITS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gif.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--capture", type=int, required=True, metavar="N", help="capture number N of Capture<N>")
    parser.add_argument("--seq", nargs="*", default=None, metavar="NAME",
                        help="only these sequences (default: every processed one)")
    parser.add_argument("--split", default="train", choices=SPLITS, help="dataset split (default: train)")
    parser.add_argument("--basedir", type=Path, default=DEFAULT_BASEDIR, metavar="DIR",
                        help=f"InterHand2.6M 30 fps root (default: {DEFAULT_BASEDIR})")
    parser.add_argument("--out-root", "--out_root", dest="out_root", type=Path, default=None, metavar="DIR",
                        help="the --out-root the sequences were processed with (GIFs go under it too)")
    parser.add_argument("--cam", default=None, metavar="ID", help="camera id (default: 400002, or the first kept camera)")
    parser.add_argument("--fps", type=float, default=30.0, help="frames per second (default: 30)")
    parser.add_argument("--stride", type=int, default=1, help="use every n-th frame (default: 1)")
    parser.add_argument("--max-width", "--max_width", dest="max_width", type=int, default=None, metavar="PX",
                        help="downscale wider images to this width")
    parser.add_argument("--overlay", action="store_true", help="tint the rendered masks over the images")
    add_runtime_flags(parser)
    return parser


def main(args) -> int:
    from interhand_prep.gifs import make_capture_gifs

    paths = make_capture_gifs(args.basedir, args.split, args.capture, out_root=args.out_root, cam=args.cam, fps=args.fps,
                              stride=args.stride, max_width=args.max_width, overlay=args.overlay, seqs=args.seq,
                              progress=not args.quiet)
    print(f"{len(paths)} GIF(s):")
    for path in paths:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(build_parser(), main))
