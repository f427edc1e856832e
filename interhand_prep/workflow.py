"""process.sh: run the stages over sequences, and the one-command demo on synthetic data."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import annots, blend_weights, render_mesh
from .cli import DEFAULT_BASEDIR, DEFAULT_MANO_DIR, add_common_options, run_main
from .dataset import InterHandDataset
from .synthetic_capture import CaptureSpec, SequenceSpec, generate_capture

DEMO_SPEC = CaptureSpec(capture=0, split="train", num_cameras=16, seed=0, sequences=[
    SequenceSpec("0051_dinosaur", "right", 24), SequenceSpec("0266_dh_pray", "both", 24)])


def ensure_demo_data(basedir: Path, mano_dir: Path) -> bool:
    """Generate the synthetic model and capture unless the capture folder exists. True if made."""
    if (basedir / "images" / DEMO_SPEC.split / f"Capture{DEMO_SPEC.capture}").is_dir():
        return False
    print(f"generating a synthetic capture in {basedir} (model: {mano_dir}) ...", flush=True)
    generate_capture(basedir, mano_dir, DEMO_SPEC, progress=True)
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="process.sh", description="Run the stages over sequences of a capture.")
    parser.add_argument("seqs", nargs="*", help="sequence names")
    parser.add_argument("--capture", type=int, default=0)
    parser.add_argument("--all", action="store_true", help="every sequence of the capture")
    parser.add_argument("--demo", action="store_true",
                        help="generate a synthetic capture under data/ if absent and process all of it")
    add_common_options(parser)
    return parser


def main(args) -> int:
    if args.demo:
        ensure_demo_data(args.basedir, args.mano_dir)
        args.all, args.capture, args.split = True, DEMO_SPEC.capture, DEMO_SPEC.split
    seqs = list(args.seqs)
    if args.all:
        seqs = InterHandDataset(args.basedir, args.split).sequences(args.capture)
    if not seqs:
        print("process.sh: nothing to do: name sequences, or pass --all or --demo", file=sys.stderr)
        return 2
    rows = []
    for seq in seqs:
        sel = annots.SequenceSelector(capture=args.capture, seq=seq, split=args.split, basedir=args.basedir,
                                      mano_dir=args.mano_dir, hand_type=args.hand_type, out_root=args.out_root,
                                      overwrite=args.overwrite)
        start = time.perf_counter()
        result = annots.run(sel, progress=not args.quiet)
        print(result.summary(), flush=True)
        print(blend_weights.run(sel, progress=not args.quiet).summary(), flush=True)
        print(render_mesh.run(sel, progress=not args.quiet).summary(), flush=True)
        rows.append((seq, len(result.frames), len(result.cameras), time.perf_counter() - start, sel.layout.root))
    print(f"\n{'sequence':<28} {'frames':>6} {'cameras':>7} {'seconds':>8}  output")
    for seq, frames, cams, seconds, root in rows:
        print(f"{seq:<28} {frames:>6} {cams:>7} {seconds:>8.2f}  {root}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(build_parser(), main))
