"""Command-line plumbing shared by the scripts: common options, logging, one-line errors."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path
from typing import Callable, Sequence

from .errors import InputError

DEFAULT_BASEDIR = Path("data/InterHand2.6M_30fps")
DEFAULT_MANO_DIR = Path("data/mano")


def add_sequence_options(parser: argparse.ArgumentParser) -> None:
    """--capture --seq --split --basedir --mano-dir --hand-type --out-root --overwrite (+ aliases)."""
    parser.add_argument("--capture", type=int, required=True, help="capture number N of Capture<N>")
    parser.add_argument("--seq", required=True, help="sequence name, e.g. 0051_dinosaur")
    add_common_options(parser)


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", default="train", choices=["train", "val", "test"], help="dataset split (default: train)")
    parser.add_argument("--basedir", type=Path, default=DEFAULT_BASEDIR,
                        help=f"InterHand2.6M 30 fps root (default: {DEFAULT_BASEDIR})")
    parser.add_argument("--mano-dir", "--mano_dir", dest="mano_dir", type=Path, default=DEFAULT_MANO_DIR,
                        help=f"folder with MANO_RIGHT.pkl and MANO_LEFT.pkl (default: {DEFAULT_MANO_DIR})")
    parser.add_argument("--hand-type", "--hand_type", dest="hand_type", default="right", choices=["right", "left", "both"],
                        help="which hand(s) to process (default: right)")
    parser.add_argument("--out-root", "--out_root", dest="out_root", type=Path, default=None,
                        help="write outputs to <out-root>/<split>/Capture<N>/<seq>/ instead of the sequence's image folder")
    parser.add_argument("--overwrite", "--clear_existed", dest="overwrite", action="store_true",
                        help="redo finished work instead of skipping it")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for input errors")


def selector_from_args(args: argparse.Namespace):
    from .annots import SequenceSelector

    return SequenceSelector(capture=args.capture, seq=args.seq, split=args.split, basedir=args.basedir,
                            mano_dir=args.mano_dir, hand_type=args.hand_type, out_root=args.out_root,
                            overwrite=args.overwrite)


def run_main(parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int | None],
             argv: Sequence[str] | None = None) -> int:
    """Parse, run `body`, and turn an InputError into one line on stderr and exit status 2."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s: %(message)s")
    prog = parser.prog
    try:
        return int(body(args) or 0)
    except InputError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"{prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)  # always one line
        return 2
    except OSError as exc:  # disk full, permissions, a file where a folder should be...
        if args.debug:
            traceback.print_exc()
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"{prog}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished files are complete, rerun to do the rest", file=sys.stderr)
        return 130
