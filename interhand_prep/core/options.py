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

from .errors import InputError

DEFAULT_VOXEL_SIZE = 0.025
DEFAULT_PADDING = 0.05
DEPTH_FORMATS = ("npy", "png16", "none")
BACKENDS = ("auto", "egl", "osmesa")
EXPORT_FORMATS = ("nerfstudio", "easymocap", "colmap", "handavatar")


def option(default: Any, *flags: str, help: str, choices=None, kind=None, output: bool = True, metavar=None,
           required: bool = False, nargs=None, const=None):
    """A dataclass field that also describes its command-line option (first flag is canonical;
    more flags are aliases such as the reference scripts' underscore spellings). `nargs` and
    `const` are argparse's (nargs="?" with a const: the flag alone means const)."""
    return field(default=default, metadata={"flags": flags, "help": help, "choices": choices, "kind": kind,
                                            "output": output, "metavar": metavar, "required": required,
                                            "nargs": nargs, "const": const})


def add_to_parser(parser: argparse.ArgumentParser, record_type, group_title: str | None = None,
                  skip: tuple[str, ...] = (), overrides: dict[str, dict] | None = None) -> None:
    """Add every field of `record_type` (but `skip`) as an option of `parser`; `overrides` replaces
    argparse settings of single fields (e.g. a default that makes a required option optional)."""
    target = parser.add_argument_group(group_title) if group_title else parser
    for f in dataclasses.fields(record_type):
        meta = f.metadata
        if not meta.get("flags") or f.name in skip:
            continue
        kwargs = {"dest": f.name, "help": meta["help"]}
        if isinstance(f.default, bool):
            kwargs["action"] = "store_true"
        else:
            if meta["required"]:
                kwargs["required"] = True
            else:
                kwargs["default"] = f.default
            for key, arg in (("kind", "type"), ("choices", "choices"), ("metavar", "metavar")):
                if meta[key]:
                    kwargs[arg] = meta[key]
            for key in ("nargs", "const"):
                if meta.get(key) is not None:
                    kwargs[key] = meta[key]
        kwargs.update((overrides or {}).get(f.name, {}))
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


def _number_type(convert, accept, requirement: str):
    """An argparse type: `convert` the text, then demand `accept(value)` (NaN and inf fail too)."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if convert is int else 'a number'}") from None
        if value != value or value in (float("inf"), float("-inf")) or not accept(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value
    return parse


positive_float = _number_type(float, lambda v: v > 0, "a positive length in metres")
non_negative_float = _number_type(float, lambda v: v >= 0, "a non-negative length in metres")
non_negative_int = _number_type(int, lambda v: v >= 0, "0 or more")
positive_millimetres = _number_type(float, lambda v: v > 0, "a positive number of millimetres")


def check(condition: bool, message: str) -> None:
    """Validation of a record's values: an InputError (one line to the user) when false."""
    if not condition:
        raise InputError(message)


# ---------------------------------------------------------------------------------------------
# Stage options


@dataclass(frozen=True)
class NoOptions:
    """options: none (a stage that has nothing to choose)."""


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
    joint_regressor: Path | None = option(None, "--joint-regressor", kind=Path, metavar="NPY",
                                          help="InterHand2.6M's J_regressor_mano_ih26m.npy, for the MANO fit error "
                                               "per frame (default: <mano-dir>/J_regressor_mano_ih26m.npy)")
    max_joint_error: float | None = option(None, "--max-joint-error", kind=positive_millimetres, metavar="MM",
                                           help="drop frames whose MANO fit is off the annotated 3D joints by more "
                                                "than MM millimetres (mean over the joints) for any hand")

    def __post_init__(self):
        check(self.max_joint_error is None or 0 < self.max_joint_error < float("inf"),
              f"--max-joint-error must be a positive number of millimetres, got {self.max_joint_error}")


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
                              help="processes for large grids (default 0: one per CPU this process may use)")

    def __post_init__(self):
        check(self.voxel_size > 0 and self.voxel_size < float("inf"),
               f"--voxel-size must be a positive length in metres, got {self.voxel_size}")
        check(self.padding >= 0 and self.padding < float("inf"),
               f"--padding must be a non-negative length in metres, got {self.padding}")
        check(self.lbs_workers >= 0, f"--lbs-workers must be 0 (one per usable CPU) or more, got {self.lbs_workers}")


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
                                 metavar="N", help="worker processes (default 0: one per CPU this process may use)")
    parts: bool = option(False, "--parts",
                         help="also write part labels, parts/cam<id>/image<frame>.png (a label per MANO joint and "
                              "hand, see parts.json); without it parts/ is removed")

    def __post_init__(self):
        check(self.backend in BACKENDS, f"unknown backend {self.backend!r}; expected one of {', '.join(BACKENDS)}")
        check(self.depth_format in DEPTH_FORMATS,
               f"unknown depth format {self.depth_format!r}; expected one of {', '.join(DEPTH_FORMATS)}")
        check(self.render_workers >= 0, f"--render-workers must be 0 (one per usable CPU) or more, got {self.render_workers}")


@dataclass(frozen=True)
class RefineOptions:
    """refine_masks: the masks refined against the images."""

    band_mm: float = option(8.0, "--band-mm", kind=positive_millimetres, metavar="MM",
                            help="how far (mm, at the hand) the refined outline may lie from the MANO outline "
                                 "(default: 8, above the MANO fits' error)")
    refine_workers: int = option(0, "--refine-workers", kind=non_negative_int, output=False, metavar="N",
                                 help="worker processes (default 0: one per CPU this process may use)")

    def __post_init__(self):
        check(0 < self.band_mm < float("inf"), f"--band-mm must be a positive number of millimetres, got {self.band_mm}")
        check(self.refine_workers >= 0, f"--refine-workers must be 0 (one per usable CPU) or more, got {self.refine_workers}")


@dataclass(frozen=True)
class ExportOptions:
    """export: the layout of another trainer."""

    format: str = option(None, "--format", choices=EXPORT_FORMATS, required=True,
                         help="nerfstudio: transforms.json; easymocap: intri.yml and extri.yml (also read by "
                              "EasyVolcap); colmap: a COLMAP model per frame (3D Gaussian splatting trainers); "
                              "handavatar: HandAvatar's and OHTA's anno_cam.pkl, images and masks, a folder per hand")
    out: Path | None = option(None, "--out", kind=Path, metavar="DIR",
                              help="export folder (default: <sequence>/export/<format>/); replaced whole when it "
                                   "holds an earlier export")
    copy: bool = option(False, "--copy", help="copy images and masks instead of linking them (relative symbolic links)")
    MASKS = ("auto", "mano", "refined")
    masks: str = option("auto", "--masks", choices=MASKS,
                        help="the masks exported: mano, the rendered MANO masks (mask/); refined, the masks refined "
                             "against the images (mask_cihp/, refine-masks); auto, the refined ones where "
                             "refine-masks finished on the sequence and is up to date, else mano (default: auto)")
    frames: tuple[int, ...] | None = option(None, "--frames", kind=int, nargs="+", metavar="FRAME",
                                            help="colmap: only these frames (default: every kept frame)")

    def __post_init__(self):
        check(self.format in EXPORT_FORMATS,
              f"unknown export format {self.format!r}; expected one of {', '.join(EXPORT_FORMATS)}")
        check(self.masks in self.MASKS, f"unknown --masks {self.masks!r}; expected one of {', '.join(self.MASKS)}")
        check(self.frames is None or self.format == "colmap",
              f"--frames chooses the frames of --format colmap, not of {self.format}")
        if self.frames is not None:
            object.__setattr__(self, "frames", tuple(sorted({int(f) for f in self.frames})))


# ---------------------------------------------------------------------------------------------
# Options of the other commands


positive_int = _number_type(int, lambda v: v > 0, "1 or more")
positive_number = _number_type(float, lambda v: v > 0, "a positive number")


@dataclass(frozen=True)
class CheckOptions:
    """check_seq: what to check against (default: as recorded in the manifest)."""

    mano_dir: Path | None = option(None, "--mano-dir", "--mano_dir", kind=Path, metavar="DIR",
                                   help="MANO model folder (default: the files recorded in the manifest)")
    voxel_size: float | None = option(None, "--voxel-size", "--voxel_size", kind=positive_float, metavar="M",
                                      help=f"grid spacing in metres (default: as recorded, else {DEFAULT_VOXEL_SIZE})")
    padding: float | None = option(None, "--padding", kind=non_negative_float, metavar="M",
                                   help=f"grid margin in metres (default: as recorded, else {DEFAULT_PADDING})")
    depth_format: str | None = option(None, "--depth-format", "--depth_format", choices=DEPTH_FORMATS,
                                      help="depth files to expect (default: as recorded, else npy)")
    no_mano: bool = option(False, "--no-mano", "--no_mano",
                           help="skip the checks that need the MANO model (params identity, vertex count, mask "
                                "labels); without it, MANO files that are missing, moved or changed since "
                                "processing are a problem")


@dataclass(frozen=True)
class MergeOptions:
    """merge_seq: the merged sequence."""

    new_name: str = option(None, "--new-name", "--new_name", metavar="NAME", required=True,
                           help="name of the merged sequence")
    force: bool = option(False, "--force", help="replace an existing merge of that name")


@dataclass(frozen=True)
class GifOptions:
    """gif: the previews."""

    cam: str | None = option(None, "--cam", metavar="ID", help="camera id (default: 400002, or the first kept camera)")
    fps: float = option(30.0, "--fps", kind=positive_number, help="frames per second (default: 30)")
    stride: int = option(1, "--stride", kind=positive_int, help="use every n-th frame (default: 1)")
    max_width: int | None = option(None, "--max-width", "--max_width", kind=positive_int, metavar="PX",
                                   help="downscale wider images to this width")
    OVERLAYS = ("mano", "refined", "parts")
    overlay: str | None = option(None, "--overlay", choices=OVERLAYS, nargs="?", const="mano",
                                 help="tint masks over the images: mano (also --overlay alone), the rendered MANO "
                                      "masks (mask/); refined, the masks refined against the images (mask_cihp/, "
                                      "refine-masks); parts, the part labels (parts/, render-mesh --parts)")

    def __post_init__(self):
        check(self.overlay is None or self.overlay in self.OVERLAYS,
              f"unknown --overlay {self.overlay!r}; expected one of {', '.join(self.OVERLAYS)}")

