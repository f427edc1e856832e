"""Which sequence a command works on, and where its data and outputs are: the options every
stage shares, as one immutable record that turns itself back into command-line arguments."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .constants import DEFAULT_BASEDIR, DEFAULT_MANO_DIR, HAND_TYPES, HANDS, SPLITS
from .layout import SequenceLayout
from .options import add_to_parser, check, option, to_argv


@dataclass(frozen=True)
class SequenceSelector:
    """The options every stage shares: which sequence, where the data and the outputs are."""

    capture: int = option(None, "--capture", kind=int, help="capture number N of Capture<N>", metavar="N",
                          required=True)
    seq: str = option(None, "--seq", help="sequence name, e.g. 0051_dinosaur", metavar="NAME", required=True)
    split: str = option("train", "--split", choices=SPLITS, help="dataset split (default: train)")
    basedir: Path = option(DEFAULT_BASEDIR, "--basedir", kind=Path, metavar="DIR",
                           help=f"InterHand2.6M 30 fps root (default: {DEFAULT_BASEDIR})")
    mano_dir: Path = option(DEFAULT_MANO_DIR, "--mano-dir", "--mano_dir", kind=Path, metavar="DIR",
                            help=f"folder with MANO_RIGHT.pkl and MANO_LEFT.pkl (default: {DEFAULT_MANO_DIR})")
    hand_type: str = option("right", "--hand-type", "--hand_type", choices=HAND_TYPES,
                            help="hand(s) to process; auto: every hand with MANO parameters in the sequence "
                                 "(default: right)")
    out_root: Path | None = option(None, "--out-root", "--out_root", kind=Path, metavar="DIR",
                                   help="write outputs to DIR/<split>/Capture<N>/<seq>/ instead of the "
                                        "sequence's image folder")
    overwrite: bool = option(False, "--overwrite", "--clear_existed",
                             help="recompute finished work (files whose bytes do not change are kept)")

    def __post_init__(self):
        check(self.hand_type in HAND_TYPES,
              f"unknown hand type {self.hand_type!r}; expected one of {', '.join(HAND_TYPES)}")
        check(self.split in SPLITS, f"unknown split {self.split!r}; expected one of {', '.join(SPLITS)}")

    def replace(self, **changes) -> "SequenceSelector":
        return dataclasses.replace(self, **changes)

    @property
    def fixed_hands(self) -> tuple[str, ...] | None:
        """The hands of a fixed --hand-type; None for auto (resolved from the data)."""
        return {"right": ("right",), "left": ("left",), "both": HANDS}.get(self.hand_type)

    @property
    def layout(self) -> SequenceLayout:
        return SequenceLayout.for_sequence(self.basedir, self.split, self.capture, self.seq, self.out_root)

    @property
    def name(self) -> str:
        return f"{self.split}/Capture{self.capture}/{self.seq}"

    def to_argv(self) -> list[str]:
        """Arguments that select the same sequence with the same shared options."""
        return ["--capture", str(self.capture), "--seq", self.seq] + to_argv(self.replace(capture=None, seq=None))


def add_selector_options(parser: argparse.ArgumentParser, with_sequence: bool = True,
                         capture_default: int | None = None) -> None:
    """--capture and --seq (required) and the shared options; `with_sequence=False` leaves out
    --seq, and a `capture_default` makes --capture optional."""
    overrides = {}
    if capture_default is not None:
        overrides["capture"] = {"required": False, "default": capture_default,
                                "help": f"capture number N of Capture<N> (default: {capture_default})"}
    add_to_parser(parser, SequenceSelector, skip=() if with_sequence else ("seq",), overrides=overrides)


def selector_from_args(args: argparse.Namespace, **overrides) -> SequenceSelector:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(SequenceSelector) if hasattr(args, f.name)}
    values.update(overrides)
    return SequenceSelector(**values)
