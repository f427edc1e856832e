"""Where every output file of a processed sequence lives, and how each kind is encoded: one
reader and one writer per kind, side by side.

A processed sequence folder (the output contract the trainers read):
    annots.npy                       {"cams": {"K","R","T","D": {cam_id: array}}, "ims": [{"ims": [...]}]}
    cams.txt, frames.txt             kept camera ids / frame ids, one per line, sorted numerically
    cam<id>/image<frame>.jpg         the images (symbolic links when written under --out-root)
    params/<hand>/<frame>.npy        {"poses" 1x48, "Rh" 1x3, "Th" 1x3 (m), "shapes" 1x10}
    params/<hand>/tpose.npy          the canonical parameters
    vertices/<hand>/<frame>.npy      778x3 float32 world coordinates (m)
    lbs/<hand>/{faces,parents,weights,joints,tvertices,tbw,parts}.npy, bweights/<frame>.npy, bs/<frame>.npy
                                     skinning grids (prepare_blend_weights.py)
    mask/cam<id>/image<frame>.png    hand masks (render_mesh.py): MASK_LABELS
    parts/cam<id>/image<frame>.png   part labels (render_mesh.py --parts): parts.PART_TABLE
    parts.json                       the part-label table (render_mesh.py --parts)
    depth/cam<id>/image<frame>.npy   depth maps (render_mesh.py), or .png with --depth-format png16
    prep.json                        the provenance manifest (see manifest.py)
    .<stage>.progress                the units an unfinished run of a stage completed (stages/base.py)
    export/<format>/                 the sequence in another trainer's layout (export.py; ExportLayout)

Outside the sequence folders: GIF previews (<root>/gif/...), merged sequences (<root>/merge/<name>)
and process.sh's logs, where <root> is --out-root or the dataset root.

Names read back from files (camera ids, frame ids) are checked to be plain numbers, and names from
the command line to be plain names, so no crafted name points a path outside its folder.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from .cameras import CameraSet
from .dataset import capture_folder, image_name
from .errors import InputError
from .fileio import load_npy, npy_bytes, write_bytes, write_text
from .constants import CAMERA_DIR_PATTERN, HAND_COLORS, HANDS

PARAM_KEYS = {"poses": 48, "Rh": 3, "Th": 3, "shapes": 10}
MANIFEST_NAME = "prep.json"
FIT_QUALITY_HEADER = "frame,hand,mean_error_mm,max_error_mm,valid_joints"
LBS_SHARED_FILES = ("faces", "parents", "weights", "joints", "tvertices", "tbw", "parts")
# mask labels: where the nearest surface is the left or the right hand; 0 is background
MASK_LABELS = {"left": 100, "right": 200}
PNG16_UNITS_PER_METRE = 10000  # depth png16: uint16 in units of 0.1 mm (max 6.5535 m)
_ID_RE = re.compile(r"^\d+$")
_FRAME_FILE_RE = re.compile(r"^(\d+)\.npy$")
_IMAGE_FILE_RE = re.compile(r"^image(\d+)\.(jpg|png|npy)$")
_CAMERA_DIR_RE = re.compile(CAMERA_DIR_PATTERN)


def output_capture_dir(basedir: str | Path, split: str, capture: int, out_root: str | Path | None) -> Path:
    """Where the processed sequences of a capture are: its image folder, or under --out-root."""
    return capture_folder(basedir, split, capture) if out_root is None else Path(out_root) / split / f"Capture{capture}"


def processed_sequences(capture_dir: Path) -> list[str]:
    """The sequence folders of a capture that get_annots has finished, sorted."""
    return sorted(p.name for p in capture_dir.iterdir() if (p / "annots.npy").is_file()) if capture_dir.is_dir() else []


def gif_path(root: str | Path, split: str, capture: int, seq: str, cam: str) -> Path:
    """<root>/gif/<split>/Capture<N>/<seq>/cam<id>.gif (root: --out-root, else the dataset root)"""
    return Path(root) / "gif" / split / f"Capture{capture}" / check_name(seq, "sequence") / f"cam{_camera_id(cam, 'gif')}.gif"


def merge_dir(root: str | Path, name: str) -> Path:
    """<root>/merge/<name> (root: --out-root, else the dataset root)"""
    return Path(root) / "merge" / check_name(name, "--new-name")


def log_path(logs: str | Path, split: str, capture: int, seq: str) -> Path:
    """process.sh's log of one sequence; its JSON report has the same name with .json."""
    return Path(logs) / f"{split}_Capture{capture}_{check_name(seq, 'sequence')}.log"


def check_name(value: str, what: str) -> str:
    """A sequence or folder name from the user or a file: one plain path component."""
    if not value or value in (".", "..") or "/" in value or "\\" in value or "\0" in value:
        raise InputError(f"{what} {value!r} is not a plain folder name")
    return value


def _camera_id(cam: str, source) -> str:
    if not _ID_RE.match(str(cam)):
        raise InputError(f"{source}: camera id {cam!r} is not a number")
    return str(cam)


# ---------------------------------------------------------------------------------------------
# Codecs of the image-like outputs


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    """A single-channel uint8 or uint16 (H, W) image as a PNG file (no filtering, zlib level 1).

    Written here rather than with Pillow, which encodes 16-bit images about 2x slower (2.0 against
    0.9 ms for a 334 x 512 depth map, measured); Pillow (and every PNG reader) decodes it.
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected a (H, W) uint8 or uint16 image, got {image.dtype} {image.shape}")
    height, width = image.shape
    depth_bits = 8 * image.dtype.itemsize
    rows = np.zeros((height, 1 + width * image.dtype.itemsize), np.uint8)  # each row: filter byte 0, then pixels
    rows[:, 1:] = image.astype(image.dtype.newbyteorder(">"), copy=False).view(np.uint8).reshape(height, -1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, depth_bits, 0, 0, 0, 0)  # greyscale, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), compress_level))
            + chunk(b"IEND", b""))


def encode_mask(mask: np.ndarray) -> bytes:
    """uint8 (H, W) labels -> single-channel PNG."""
    return encode_png(np.ascontiguousarray(mask, dtype=np.uint8))


def decode_mask(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable mask ({exc})") from None


def tint_hands(image: np.ndarray, mask: np.ndarray, weight: float) -> np.ndarray:
    """image (H, W, 3) uint8, mask (H, W) MASK_LABELS -> the image with each hand's pixels blended
    towards its HAND_COLORS at `weight` (uint8): how previews and figures show a mask."""
    out = image.astype(np.float32)
    for hand, label in MASK_LABELS.items():
        sel = mask == label
        out[sel] = (1 - weight) * out[sel] + weight * np.array(HAND_COLORS[hand], np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def encode_depth(depth: np.ndarray, depth_format: str) -> bytes:
    """float32 metres (H, W), 0 = no hand -> npy float32 (H, W, 1) or png16 (uint16, 0.1 mm)."""
    if depth_format == "npy":
        return npy_bytes(np.ascontiguousarray(depth, dtype=np.float32)[..., None])
    if depth_format == "png16":
        return encode_png(np.clip(np.rint(depth * PNG16_UNITS_PER_METRE), 0, 65535).astype(np.uint16))
    raise ValueError(f"no depth encoding {depth_format!r}")


def decode_depth(path: Path) -> np.ndarray:
    """A depth file of either format -> float32 (H, W, 1) metres."""
    if path.suffix == ".npy":
        return load_npy(path)
    from PIL import Image

    try:
        with Image.open(path) as im:
            return (np.asarray(im).astype(np.float32) / PNG16_UNITS_PER_METRE)[..., None]
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable depth map ({exc})") from None


# ---------------------------------------------------------------------------------------------
# The per-view output kinds: one row each. Their files are <name>/cam<id>/image<frame><suffix>.


@dataclass(frozen=True)
class ViewKind:
    """An image-like output with one file per camera view.

    name            its folder, and how options and messages call it
    stage           the stage that writes it
    formats         {format: (file suffix, encoder of an array, approximate bytes per pixel on disk)}
    decode          file -> array (any of its formats)
    merged          merge-seq links it into a merged sequence
    checked         check-seq verifies that every view has it, readable
    exported        export carries it into other trainers' layouts
    """

    name: str
    stage: str
    formats: dict[str, tuple[str, Callable[[np.ndarray], bytes], float]]
    decode: Callable[[Path], np.ndarray]
    merged: bool = True
    checked: bool = True
    exported: bool = True

    def suffix(self, fmt: str) -> str:
        return self.formats[fmt][0]


# Written in this order for each view: the mask last, as the mark of a whole view.
VIEW_KINDS: dict[str, ViewKind] = {kind.name: kind for kind in (
    ViewKind("depth", "render_mesh", {"npy": (".npy", lambda a: encode_depth(a, "npy"), 4.0),
                                      "png16": (".png", lambda a: encode_depth(a, "png16"), 0.35)}, decode_depth),
    # part labels (render_mesh --parts): written before the mask, which marks a whole view
    ViewKind("parts", "render_mesh", {"png": (".png", encode_mask, 0.06)}, decode_mask),
    ViewKind("mask", "render_mesh", {"png": (".png", encode_mask, 0.05)}, decode_mask),
    # the masks refined against the images: the folder HandNeRF's loaders read before mask/
    ViewKind("mask_cihp", "refine_masks", {"png": (".png", encode_mask, 0.05)}, decode_mask, exported=False),
)}


def render_formats(depth_format: str, parts: bool = False) -> dict[str, str]:
    """{view kind: format} that render_mesh writes for a --depth-format ('none': masks only) and
    --parts."""
    return {"mask": "png", **({"depth": depth_format} if depth_format != "none" else {}),
            **({"parts": "png"} if parts else {})}


class SequenceLayout:
    """All output paths of one processed (or merged) sequence folder, and their readers and writers."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def for_sequence(cls, basedir: str | Path, split: str, capture: int, seq: str,
                     out_root: str | Path | None = None) -> "SequenceLayout":
        """The sequence's image folder itself, or <out_root>/<split>/Capture<N>/<seq>."""
        return cls(output_capture_dir(basedir, split, capture, out_root) / check_name(seq, "sequence"))

    # -- paths --------------------------------------------------------------------------------
    @property
    def annots(self) -> Path:
        return self.root / "annots.npy"

    @property
    def cams_txt(self) -> Path:
        return self.root / "cams.txt"

    @property
    def frames_txt(self) -> Path:
        return self.root / "frames.txt"

    @property
    def seqs_txt(self) -> Path:
        """The source sequences of a merged sequence, one per line."""
        return self.root / "seqs.txt"

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST_NAME

    def progress(self, stage: str) -> Path:
        """.<stage>.progress: the journal of a stage's unfinished run (stages/base.py)."""
        return self.root / f".{check_name(stage, 'stage')}.progress"

    def unfinished_rows(self, stage: str) -> Path:
        """.<stage>.rows: the table rows of the views an unfinished run has done (refine_masks)."""
        return self.root / f".{check_name(stage, 'stage')}.rows"

    @property
    def mask_quality(self) -> Path:
        """mask_quality.csv: per view and hand, the refined mask against the MANO mask."""
        return self.root / "mask_quality.csv"

    def refined_mask(self, cam: str, frame: int) -> Path:
        """mask_cihp/cam<id>/image<frame>.png: the mask refined against the image (refine_masks)."""
        return self.view("mask_cihp", cam, frame, "png")

    def parts(self, cam: str, frame: int) -> Path:
        """parts/cam<id>/image<frame>.png: the part labels of a view (render_mesh --parts)."""
        return self.view("parts", cam, frame, "png")

    @property
    def parts_json(self) -> Path:
        """parts.json: the part-label table (core/parts.py), written with the part images."""
        return self.root / "parts.json"

    def figure(self, name: str) -> Path:
        """figures/<name>: the notebooks' figures of this sequence (PNG)."""
        return self.root / "figures" / check_name(name, "figure")

    @property
    def fit_quality(self) -> Path:
        """fit_quality.csv: the MANO fit's joint error per frame and hand (get_annots)."""
        return self.root / "fit_quality.csv"

    def camera_dir(self, cam: str) -> Path:
        return self.root / f"cam{_camera_id(cam, self.root)}"

    @staticmethod
    def image_key(cam: str, frame: int) -> str:
        """An image as listed in annots.npy, relative to the sequence folder."""
        return f"cam{cam}/{image_name(frame)}"

    def image(self, cam: str, frame: int) -> Path:
        return self.camera_dir(cam) / image_name(frame)

    def params_dir(self, hand: str) -> Path:
        return self.root / "params" / hand

    def params(self, hand: str, frame: int) -> Path:
        return self.params_dir(hand) / f"{int(frame)}.npy"

    def tpose_params(self, hand: str) -> Path:
        return self.params_dir(hand) / "tpose.npy"

    def vertices_dir(self, hand: str) -> Path:
        return self.root / "vertices" / hand

    def vertices(self, hand: str, frame: int) -> Path:
        return self.vertices_dir(hand) / f"{int(frame)}.npy"

    def view(self, kind: str, cam: str, frame: int, fmt: str) -> Path:
        """<kind>/cam<id>/image<frame><suffix of fmt>: one view's file of an output kind (VIEW_KINDS)."""
        suffix = VIEW_KINDS[kind].suffix(fmt)
        return self.root / kind / f"cam{_camera_id(cam, self.root)}" / f"image{int(frame):04d}{suffix}"

    def view_files(self, cam: str, frame: int, formats: dict[str, str]) -> list[Path]:
        """The files of one view, for {kind: format}."""
        return [self.view(kind, cam, frame, fmt) for kind, fmt in formats.items()]

    def mask(self, cam: str, frame: int) -> Path:
        """mask/cam<id>/image<frame>.png"""
        return self.view("mask", cam, frame, "png")

    def depth(self, cam: str, frame: int, depth_format: str = "npy") -> Path:
        """depth/cam<id>/image<frame>.npy (float32 metres) or .png (png16: uint16, 0.1 mm)."""
        return self.view("depth", cam, frame, depth_format)

    def lbs_dir(self, hand: str) -> Path:
        return self.root / "lbs" / hand

    def lbs_file(self, hand: str, name: str) -> Path:
        """Shared skinning files: faces, parents, weights, joints, tvertices, tbw, parts (.npy;
        parts: each vertex's joint, core/parts.py)."""
        if name not in LBS_SHARED_FILES:
            raise ValueError(f"unknown lbs file {name!r}; expected one of {LBS_SHARED_FILES}")
        return self.lbs_dir(hand) / f"{name}.npy"

    def bweights(self, hand: str, frame: int) -> Path:
        return self.lbs_dir(hand) / "bweights" / f"{int(frame)}.npy"

    def bs(self, hand: str, frame: int) -> Path:
        return self.lbs_dir(hand) / "bs" / f"{int(frame)}.npy"

    # -- what exists (to remove what a run no longer produces) ---------------------------------
    @staticmethod
    def _frame_files(folder: Path) -> dict[int, Path]:
        if not folder.is_dir():
            return {}
        return {int(m.group(1)): folder / name for name in os.listdir(folder) if (m := _FRAME_FILE_RE.match(name))}

    def existing_frame_files(self, kind: str, hand: str) -> dict[int, Path]:
        """{frame: path} of params, vertices, bweights or bs files present for `hand`."""
        folder = {"params": self.params_dir(hand), "vertices": self.vertices_dir(hand),
                  "bweights": self.lbs_dir(hand) / "bweights", "bs": self.lbs_dir(hand) / "bs"}[kind]
        return self._frame_files(folder)

    def existing_view_files(self, kind: str) -> list[Path]:
        """Every <kind>/cam<id>/image<frame>.* present (mask, depth: VIEW_KINDS)."""
        top = self.root / kind
        if not top.is_dir():
            return []
        found = []
        for cam_dir in top.iterdir():
            if _CAMERA_DIR_RE.match(cam_dir.name) and cam_dir.is_dir() and not cam_dir.is_symlink():
                found += [cam_dir / n for n in os.listdir(cam_dir) if _IMAGE_FILE_RE.match(n)]
        return found

    def existing_camera_links(self) -> dict[str, Path]:
        """{camera id: path} of the cam<id> symbolic links of an --out-root folder."""
        if not self.root.is_dir():
            return {}
        return {m.group(1): p for p in self.root.iterdir() if (m := _CAMERA_DIR_RE.match(p.name)) and p.is_symlink()}

    # -- readers and writers -------------------------------------------------------------------
    def write_annots(self, cameras: CameraSet, frames: Iterable[int]) -> bool:
        """annots.npy for `cameras` (in cams.txt order) and `frames` (in frames.txt order)."""
        cams = {
            "K": {cam: cameras.K[c].copy() for c, cam in enumerate(cameras.ids)},
            "R": {cam: cameras.R[c].copy() for c, cam in enumerate(cameras.ids)},
            "T": {cam: cameras.T[c].reshape(3, 1).copy() for c, cam in enumerate(cameras.ids)},
            "D": {cam: np.zeros((5, 1)) for cam in cameras.ids},
        }
        ims = [{"ims": [self.image_key(cam, frame) for cam in cameras.ids]} for frame in frames]
        return self.write_annots_dict({"cams": cams, "ims": ims})

    def write_annots_dict(self, annots: dict) -> bool:
        return write_bytes(self.annots, npy_bytes(annots))

    def read_annots(self) -> dict:
        from .safe_pickle import read_npy

        if not self.annots.is_file():
            raise InputError(f"{self.annots}: file not found (run get_annots.py first)")
        annots = read_npy(self.annots.read_bytes(), self.annots)
        if not isinstance(annots, dict) or not isinstance(annots.get("cams"), dict) or "ims" not in annots:
            raise InputError(f"{self.annots}: not an annots.npy (expected a dict with 'cams' and 'ims')")
        for cam in annots["cams"].get("K", {}):
            _camera_id(cam, self.annots)
        return annots

    def read_cameras(self) -> CameraSet:
        """The cameras of annots.npy as a CameraSet, in cams.txt order."""
        cams = self.read_annots()["cams"]
        ids = list(cams.get("K", {}))
        try:
            return CameraSet(ids=ids, K=np.stack([np.asarray(cams["K"][i], dtype=np.float64) for i in ids]).reshape(-1, 3, 3),
                             R=np.stack([np.asarray(cams["R"][i], dtype=np.float64) for i in ids]).reshape(-1, 3, 3),
                             T=np.stack([np.asarray(cams["T"][i], dtype=np.float64).reshape(3) for i in ids]))
        except (KeyError, ValueError, TypeError) as exc:
            raise InputError(f"{self.annots}: malformed camera entries ({type(exc).__name__}: {exc})") from None

    @staticmethod
    def write_ids(path: Path, ids: Iterable) -> bool:
        return write_text(path, "".join(f"{i}\n" for i in ids))

    @staticmethod
    def read_ids(path: Path) -> list[str]:
        if not path.is_file():
            raise InputError(f"{path}: not found (run get_annots.py first)")
        ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        for i in ids:
            if not _ID_RE.match(i):
                raise InputError(f"{path}: {i!r} is not a number")
        return ids

    def read_frames(self) -> list[int]:
        return [int(f) for f in self.read_ids(self.frames_txt)]

    def read_cams(self) -> list[str]:
        return self.read_ids(self.cams_txt)

    @staticmethod
    def params_bytes(params: dict[str, np.ndarray]) -> bytes:
        return npy_bytes({k: np.asarray(params[k], dtype=np.float32).reshape(1, n) for k, n in PARAM_KEYS.items()})

    @classmethod
    def write_params(cls, path: Path, params: dict[str, np.ndarray]) -> bool:
        return write_bytes(path, cls.params_bytes(params))

    @staticmethod
    def read_params(path: Path) -> dict[str, np.ndarray]:
        from .safe_pickle import read_npy

        if not path.is_file():
            raise InputError(f"{path}: file not found")
        params = read_npy(path.read_bytes(), path)
        if not isinstance(params, dict):
            raise InputError(f"{path}: not a parameter file (expected a pickled dict)")
        for key, n in PARAM_KEYS.items():
            value = params.get(key)
            if not isinstance(value, np.ndarray) or value.shape != (1, n):
                shape = None if value is None else np.shape(value)
                raise InputError(f"{path}: '{key}' has shape {shape}, expected (1, {n})")
        return params

    @staticmethod
    def write_vertices(path: Path, vertices: np.ndarray) -> bool:
        return write_bytes(path, npy_bytes(np.asarray(vertices, dtype=np.float32)))

    @staticmethod
    def read_vertices(path: Path, num_vertices: int | None = None) -> np.ndarray:
        vertices = load_npy(path)
        if vertices.ndim != 2 or vertices.shape[1] != 3 or (num_vertices and len(vertices) != num_vertices):
            raise InputError(f"{path}: vertices have shape {vertices.shape}, expected ({num_vertices or 'V'}, 3)")
        return vertices

    def write_fit_quality(self, rows: list[tuple[int, str, float, float, int]]) -> bool:
        """(frame, hand, mean mm, max mm, valid joints) rows; empty error cells where no joint is valid."""
        cell = lambda v: "" if not np.isfinite(v) else f"{v:.3f}"  # noqa: E731
        lines = [FIT_QUALITY_HEADER] + [f"{f},{h},{cell(m)},{cell(x)},{int(n)}" for f, h, m, x, n in rows]
        return write_text(self.fit_quality, "\n".join(lines) + "\n")

    def read_fit_quality(self) -> list[tuple[int, str, float, float, int]]:
        """The rows of fit_quality.csv (NaN for empty cells); a one-line error for a malformed file."""
        path = self.fit_quality
        if not path.is_file():
            raise InputError(f"{path}: not found")
        lines = path.read_text().splitlines()
        if not lines or lines[0] != FIT_QUALITY_HEADER:
            raise InputError(f"{path}: header is not {FIT_QUALITY_HEADER!r}")
        rows = []
        for number, line in enumerate(lines[1:], start=2):
            try:
                frame, hand, mean, worst, count = line.split(",")
                if hand not in HANDS:
                    raise ValueError(hand)
                rows.append((int(frame), hand, float(mean) if mean else np.nan, float(worst) if worst else np.nan,
                             int(count)))
            except ValueError:
                raise InputError(f"{path}:{number}: malformed row {line!r}") from None
        return rows

    def write_view(self, cam: str, frame: int, outputs: dict[str, tuple[np.ndarray, str]]) -> int:
        """One view's files, {kind: (array, format)}, in the order of VIEW_KINDS. -> files written."""
        written = 0
        for kind in VIEW_KINDS.values():
            if kind.name in outputs:
                array, fmt = outputs[kind.name]
                written += write_bytes(self.view(kind.name, cam, frame, fmt), kind.formats[fmt][1](array))
        return written

    def view_done(self, cam: str, frame: int, formats: dict[str, str]) -> bool:
        """Whether every file of the view, for {kind: format}, exists."""
        return all(path.is_file() for path in self.view_files(cam, frame, formats))

    def hands_present(self) -> list[str]:
        """The hands whose params folder exists (for folders without a manifest)."""
        return [h for h in HANDS if self.params_dir(h).is_dir()]

    def export_dir(self, export_format: str) -> Path:
        """export/<format>: the default folder of `export.py --format <format>`."""
        return self.root / "export" / check_name(export_format, "export format")


class ExportLayout:
    """The files of one export folder (export.py), for both formats; paths inside it are written
    into its camera files relative to the folder, in POSIX form.

        export.json                      what was exported from where, with which options
        transforms.json                  nerfstudio: cameras and per-view files
        intri.yml, extri.yml             EasyMocap: cameras (OpenCV FileStorage YAML)
        images/<cam id>/<frame>.jpg      links to (or copies of) the sequence's images
        masks/<cam id>/<frame>.png       links to (or copies of) its masks
        parts/<cam id>/<frame>.png       links to (or copies of) its part labels (where it has them)
        parts.json                       the part-label table (with them)
        depths/<cam id>/<frame>.npy      nerfstudio: float32 (H, W) depth in millimetres
        <frame>/sparse/0/{cameras,images,points3D}.bin
                                         colmap: one COLMAP model per frame (core/colmap.py)
        <frame>/images/cam<id>/image<frame>.jpg, <frame>/masks/cam<id>/image<frame>.png
                                         colmap: the frame's images and masks, named as in the
                                         sequence (the model's image names)

        <hand>/InterHand2.6M_5fps_batch1/  handavatar: HandAvatar's and OHTA's layout, one folder per
            images/<name>, masks_removeblack/<name .png>, masks_SAM/<name .png>   hand, with <name> =
            preprocess/<split>/Capture<N>/<seq>/anno_cam.pkl             <split>/Capture<N>/<seq>/cam<id>/image<frame>.jpg

    <frame> is the InterHand2.6M frame number zero-padded to 6 digits, so names sort in time order.
    """

    MARKER = "export.json"
    # HandAvatar's folder names; its loader reads data/InterHand/<fps>/InterHand2.6M_<fps>fps_batch1
    # with fps 5 in every shipped config
    HANDAVATAR_FOLDER = "InterHand2.6M_5fps_batch1"

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def marker(self) -> Path:
        return self.root / self.MARKER

    @property
    def transforms_json(self) -> Path:
        return self.root / "transforms.json"

    @property
    def intri_yml(self) -> Path:
        return self.root / "intri.yml"

    @property
    def extri_yml(self) -> Path:
        return self.root / "extri.yml"

    @staticmethod
    def _name(frame: int, suffix: str) -> str:
        return f"{int(frame):06d}{suffix}"

    def image(self, cam: str, frame: int) -> Path:
        return self.root / "images" / _camera_id(cam, self.root) / self._name(frame, ".jpg")

    def mask(self, cam: str, frame: int) -> Path:
        return self.root / "masks" / _camera_id(cam, self.root) / self._name(frame, ".png")

    def depth(self, cam: str, frame: int) -> Path:
        return self.root / "depths" / _camera_id(cam, self.root) / self._name(frame, ".npy")

    def parts(self, cam: str, frame: int) -> Path:
        return self.root / "parts" / _camera_id(cam, self.root) / self._name(frame, ".png")

    def colmap_frame(self, frame: int) -> Path:
        """<frame>/: the COLMAP scene of one frame (colmap)."""
        return self.root / self._name(frame, "")

    def colmap_model(self, frame: int, name: str) -> Path:
        """<frame>/sparse/0/<name>.bin: cameras, images, points3D."""
        if name not in ("cameras", "images", "points3D"):
            raise ValueError(f"no COLMAP model file {name!r}")
        return self.colmap_frame(frame) / "sparse" / "0" / f"{name}.bin"

    @staticmethod
    def colmap_image_name(cam: str, frame: int) -> str:
        """A view's image name in a frame's COLMAP model: cam<id>/image<frame>.jpg, as in the sequence."""
        return SequenceLayout.image_key(cam, frame)

    def colmap_image(self, cam: str, frame: int) -> Path:
        return self.colmap_frame(frame) / "images" / self.colmap_image_name(_camera_id(cam, self.root), frame)

    def colmap_mask(self, cam: str, frame: int) -> Path:
        return (self.colmap_frame(frame) / "masks" / self.colmap_image_name(_camera_id(cam, self.root), frame)
                ).with_suffix(".png")

    @property
    def parts_json(self) -> Path:
        return self.root / "parts.json"

    @staticmethod
    def handavatar_name(split: str, capture: int, seq: str, cam: str, frame: int) -> str:
        """A view as HandAvatar names it (its framelist and dict keys): <split>/Capture<N>/<seq>/cam<id>/image<frame>.jpg."""
        return f"{split}/Capture{int(capture)}/{check_name(seq, 'sequence')}/{SequenceLayout.image_key(cam, frame)}"

    def handavatar_root(self, hand: str) -> Path:
        return self.root / hand / self.HANDAVATAR_FOLDER

    def handavatar_image(self, hand: str, name: str) -> Path:
        return self.handavatar_root(hand) / "images" / name

    def handavatar_mask(self, hand: str, name: str, folder: str = "masks_removeblack") -> Path:
        """masks_removeblack/ (HandAvatar, OHTA) or masks_SAM/ (OHTA), the image's name with .png."""
        if folder not in ("masks_removeblack", "masks_SAM"):
            raise ValueError(f"no HandAvatar mask folder {folder!r}")
        return (self.handavatar_root(hand) / folder / name).with_suffix(".png")

    def handavatar_anno(self, hand: str, split: str, capture: int, seq: str) -> Path:
        return (self.handavatar_root(hand) / "preprocess" / split / f"Capture{int(capture)}" / check_name(seq, "sequence")
                / "anno_cam.pkl")

    def relative(self, path: Path) -> str:
        """A path inside the folder as its camera files name it: relative, with forward slashes."""
        return Path(path).relative_to(self.root).as_posix()


def write_grid(path: Path, grid: np.ndarray) -> bool:
    return write_bytes(path, npy_bytes(np.ascontiguousarray(grid, dtype=np.float32)))
