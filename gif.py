#!/usr/bin/env python
"""GIF previews of every processed sequence of a capture (optionally with the masks tinted over).

    python gif.py --capture 0 [--cam 400002] [--fps 30] [--stride 1] [--max-width 256] [--overlay]
"""

import argparse
import sys

from interhand_prep.cli import add_common_options, run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gif.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--capture", type=int, required=True)
    parser.add_argument("--seq", nargs="*", default=None, help="only these sequences (default: every processed one)")
    parser.add_argument("--cam", default=None, help="camera id (default: 400002, or the first kept camera)")
    parser.add_argument("--fps", type=float, default=30.0, help="frames per second (default: 30)")
    parser.add_argument("--stride", type=int, default=1, help="use every n-th frame (default: 1)")
    parser.add_argument("--max-width", "--max_width", dest="max_width", type=int, default=None,
                        help="downscale wider images to this width")
    parser.add_argument("--overlay", action="store_true", help="tint the rendered masks over the images")
    add_common_options(parser)
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
