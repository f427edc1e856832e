"""The options of every stage, defined once: typed, frozen records whose fields carry their flags
and help. The command-line scripts and the batch driver build their parsers from them, and a
record turns itself back into command-line arguments, so process.sh passes on exactly what it
was given. A field with `output=False` does not change what the stage writes (worker counts), so
it is not part of the stage's recipe in the manifest.

This module imports nothing heavy: `--help` of every command stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPLITS = ("train", "val", "test")
HANDS = ("right", "left")
HAND_TYPES = ("right", "left", "both", "auto")
DEFAULT_BASEDIR = Path("data/InterHand2.6M_30fps")
DEFAULT_MANO_DIR = Path("data/mano")
DEFAULT_VOXEL_SIZE = 0.025
DEFAULT_PADDING = 0.05
DEPTH_FORMATS = ("npy", "png16", "none")
BACKENDS = ("auto", "egl", "osmesa")


def option(default: Any, *flags: str, help: str, choices=None, kind=None, output: bool = True, metavar=None):
    """A dataclass field that also describes its command-line option (first flag is canonical;
    more flags are aliases such as the reference scripts' underscore spellings)."""
    return field(default=default, metadata={"flags": flags, "help": help, "choices": choices, "kind": kind,
                                            "output": output, "metavar": metavar})


def add_to_parser(parser: argparse.ArgumentParser, record_type, group_title: str | None = None) -> None:
    """Add every field of `record_type` as an option of `parser`."""
    target = parser.add_argument_group(group_title) if group_title else parser
    for f in dataclasses.fields(record_type):
        meta = f.metadata
        if not meta.get("flags"):
            continue
        kwargs = {"dest": f.name, "help": meta["help"]}
        if isinstance(f.default, bool):
            kwargs["action"] = "store_true"
        else:
            kwargs["default"] = f.default
            if meta["kind"]:
                kwargs["type"] = meta["kind"]
            if meta["choices"]:
                kwargs["choices"] = meta["choices"]
            if meta["metavar"]:
                kwargs["metavar"] = meta["metavar"]
        target.add_argument(*meta["flags"], **kwargs)


def from_args(record_type, args: argparse.Namespace):
    """The record of `record_type` with the values parsed into `args`."""
    return record_type(**{f.name: getattr(args, f.name) for f in dataclasses.fields(record_type)
                          if f.metadata.get("flags") and hasattr(args, f.name)})


def to_argv(record) -> list[str]:
    """Command-line arguments that rebuild `record` (options left at their default are omitted)."""
    argv = []
    for f in dataclasses.fields(record):
        if not f.metadata.get("flags"):
            continue
        value = getattr(record, f.name)
        if value == f.default:
            continue
        flag = f.metadata["flags"][0]
        if isinstance(f.default, bool):
            argv.append(flag)
        else:
            argv += [flag, str(value)]
    return argv


def recipe(record) -> dict:
    """The options of `record` that change what the stage writes, as JSON-ready values."""
    out = {}
    for f in dataclasses.fields(record):
        if f.metadata.get("flags") and f.metadata.get("output", True):
            value = getattr(record, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else value
    return out


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive length in metres, got {text}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a non-negative length in metres, got {text}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _check(condition: bool, message: str) -> None:
    if not condition:
        from .errors import InputError

        raise InputError(message)


# ---------------------------------------------------------------------------------------------
# Stage options


@dataclass(frozen=True)
class AnnotsOptions:
    """get_annots: which cameras and frames to keep."""

    keep_landscape: bool = option(False, "--keep-landscape", "--keep_landscape",
                                  help="keep landscape (512x334) cameras too")
    keep_black_frames: bool = option(False, "--keep-black-frames", "--keep_black_frames",
                                     help="keep frames that are all black in some RGB camera")
    cameras_csv: Path | None = option(None, "--cameras-csv", "--cameras_csv", kind=Path, metavar="CSV",
                                      help="camera table (cam_ids,portrait,RGB,...) instead of reading "
                                           "orientation and colour from the images")


@dataclass(frozen=True)
class BlendWeightOptions:
    """prepare_blend_weights: the grids."""

    voxel_size: float = option(DEFAULT_VOXEL_SIZE, "--voxel-size", "--voxel_size", kind=positive_float, metavar="M",
                               help=f"grid spacing in metres (default: {DEFAULT_VOXEL_SIZE})")
    padding: float = option(DEFAULT_PADDING, "--padding", kind=non_negative_float, metavar="M",
                            help=f"margin around the mesh in metres (default: {DEFAULT_PADDING})")
    surface_weights: bool = option(False, "--surface-weights", "--surface_weights",
                                   help="bweights from the closest surface point instead of the nearest vertex")
    lbs_workers: int = option(0, "--lbs-workers", kind=non_negative_int, output=False, metavar="N",
                              help="processes for large grids (default 0: one per core)")

    def __post_init__(self):
        _check(self.voxel_size > 0 and self.voxel_size < float("inf"),
               f"--voxel-size must be a positive length in metres, got {self.voxel_size}")
        _check(self.padding >= 0 and self.padding < float("inf"),
               f"--padding must be a non-negative length in metres, got {self.padding}")
        _check(self.lbs_workers >= 0, f"--lbs-workers must be 0 (one per core) or more, got {self.lbs_workers}")


@dataclass(frozen=True)
class RenderOptions:
    """render_mesh: masks and depth maps."""

    backend: str = option("auto", "--backend", choices=BACKENDS,
                          help="OpenGL platform; auto picks the fastest that works here (default: auto)")
    depth_format: str = option("npy", "--depth-format", "--depth_format", choices=DEPTH_FORMATS,
                               help="npy: float32 (H,W,1) metres; png16: uint16 in 0.1 mm; none: masks only "
                                    "(default: npy)")
    all_cameras: bool = option(False, "--all-cameras", "--all_cameras",
                               help="also render the cameras get_annots filtered out (at their own size)")
    render_workers: int = option(0, "--render-workers", kind=non_negative_int, output=False,
                                 metavar="N", help="worker processes (default 0: one per core)")

    def __post_init__(self):
        _check(self.backend in BACKENDS, f"unknown backend {self.backend!r}; expected one of {', '.join(BACKENDS)}")
        _check(self.depth_format in DEPTH_FORMATS,
               f"unknown depth format {self.depth_format!r}; expected one of {', '.join(DEPTH_FORMATS)}")
        _check(self.render_workers >= 0, f"--render-workers must be 0 (one per core) or more, got {self.render_workers}")


STAGE_OPTIONS = {"get_annots": AnnotsOptions, "prepare_blend_weights": BlendWeightOptions,
                 "render_mesh": RenderOptions}


# ---------------------------------------------------------------------------------------------
# Which sequence


@dataclass(frozen=True)
class SequenceSelector:
    """The options every stage shares: which sequence, where the data and the outputs are."""

    capture: int = option(None, "--capture", kind=int, help="capture number N of Capture<N>", metavar="N")
    seq: str = option(None, "--seq", help="sequence name, e.g. 0051_dinosaur", metavar="NAME")
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
        _check(self.hand_type in HAND_TYPES,
               f"unknown hand type {self.hand_type!r}; expected one of {', '.join(HAND_TYPES)}")
        _check(self.split in SPLITS, f"unknown split {self.split!r}; expected one of {', '.join(SPLITS)}")

    def replace(self, **changes) -> "SequenceSelector":
        return dataclasses.replace(self, **changes)

    @property
    def fixed_hands(self) -> tuple[str, ...] | None:
        """The hands of a fixed --hand-type; None for auto (resolved from the data)."""
        return {"right": ("right",), "left": ("left",), "both": HANDS}.get(self.hand_type)

    @property
    def layout(self):
        from .layout import SequenceLayout

        return SequenceLayout.for_sequence(self.basedir, self.split, self.capture, self.seq, self.out_root)

    @property
    def name(self) -> str:
        return f"{self.split}/Capture{self.capture}/{self.seq}"

    def to_argv(self) -> list[str]:
        """Arguments that select the same sequence with the same shared options."""
        argv = ["--capture", str(self.capture), "--seq", self.seq]
        return argv + [a for a in to_argv(dataclasses.replace(self, capture=None, seq=None))]


def add_selector_options(parser: argparse.ArgumentParser, with_sequence: bool = True,
                         capture_default: int | None = None) -> None:
    """--capture and --seq (required) and the shared options; `with_sequence=False` leaves out
    --seq, and a `capture_default` makes --capture optional."""
    for f in dataclasses.fields(SequenceSelector):
        meta = f.metadata
        if f.name == "seq" and not with_sequence:
            continue
        kwargs = {"dest": f.name, "help": meta["help"]}
        if isinstance(f.default, bool):
            kwargs["action"] = "store_true"
        else:
            if f.name == "capture" and capture_default is not None:
                kwargs["default"] = capture_default
                kwargs["help"] += f" (default: {capture_default})"
            elif f.name in ("capture", "seq"):
                kwargs["required"] = True
            else:
                kwargs["default"] = f.default
            for key, arg in (("kind", "type"), ("choices", "choices"), ("metavar", "metavar")):
                if meta[key]:
                    kwargs[arg] = meta[key]
        parser.add_argument(*meta["flags"], **kwargs)


def selector_from_args(args: argparse.Namespace, **overrides) -> SequenceSelector:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(SequenceSelector) if hasattr(args, f.name)}
    values.update(overrides)
    return SequenceSelector(**values)
