"""Reading an InterHand2.6M tree: annotation files, sequence image folders, image probes.

Layout (30 fps release):
    <basedir>/images/<split>/Capture<N>/<seq>/cam<id>/image<frame>.jpg
    <basedir>/annotations/<split>/InterHand2.6M_<split>_{camera,MANO_NeuralAnnot,joint_3d,data}.json
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from .cameras import CameraSet
from .errors import InputError
from .locking import usable_cpus
from .constants import CAMERA_DIR_PATTERN, SPLITS

PACKAGED_CAMERA_TABLE = Path(__file__).parent / "resources" / "cameras.csv"
_IMAGE_RE = re.compile(r"^image(\d+)\.jpg$")
_CAMERA_RE = re.compile(CAMERA_DIR_PATTERN)
# A frame is black when no 8x8 block of its DCT-scaled (1/8) decode exceeds this grey level.
BLACK_MAX_LEVEL = 10
# A camera is monochrome when the channels of its DCT-scaled decode differ by at most this.
MONO_MAX_CHANNEL_DIFFERENCE = 3


def capture_folder(basedir: str | Path, split: str, capture: int) -> Path:
    """<basedir>/images/<split>/Capture<N>"""
    return split_images_folder(basedir, split) / f"Capture{capture}"


def sequence_folder(basedir: str | Path, split: str, capture: int, seq: str) -> Path:
    """<basedir>/images/<split>/Capture<N>/<seq>"""
    return capture_folder(basedir, split, capture) / seq


def image_path(basedir: str | Path, split: str, capture: int, seq: str, cam: str, frame: int) -> Path:
    """<basedir>/images/<split>/Capture<N>/<seq>/cam<id>/image<frame>.jpg"""
    return sequence_folder(basedir, split, capture, seq) / f"cam{cam}" / image_name(frame)


def annotations_folder(basedir: str | Path, split: str | None = None) -> Path:
    """<basedir>/annotations (skeleton.txt, subject.txt), or its <split> folder of JSON files."""
    folder = Path(basedir) / "annotations"
    return folder / split if split else folder


def split_images_folder(basedir: str | Path, split: str) -> Path:
    """<basedir>/images/<split>, holding the Capture<N> folders."""
    return Path(basedir) / "images" / split


def read_skeleton(basedir: str | Path) -> dict[int, int]:
    """{joint: parent joint (-1 for a wrist)} of <basedir>/annotations/skeleton.txt (42 joints)."""
    path = annotations_folder(basedir) / "skeleton.txt"
    try:
        rows = [line.split() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        return {int(joint): int(parent) for _, joint, parent in rows}
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable skeleton ({exc})") from None


def image_name(frame: int) -> str:
    """The image file name of a frame id, as in the dataset: image0563.jpg, image69148.jpg."""
    return f"image{int(frame):04d}.jpg"


@dataclass(frozen=True)
class CameraFlags:
    portrait: bool
    rgb: bool


def read_camera_table(path: str | Path) -> dict[str, CameraFlags]:
    """Read a camera table like the published one: `cam_ids,portrait,RGB,perfect` rows.

    Empty lines and rows without flags are skipped.
    """
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise InputError(f"{path}: cannot read camera table ({exc.strerror})") from None
    if not rows or [c.strip().lower() for c in rows[0][:3]] != ["cam_ids", "portrait", "rgb"]:
        raise InputError(f"{path}: not a camera table (expected a header 'cam_ids,portrait,RGB,...')")
    table = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) < 3 or not row[0].strip():
            continue
        try:
            table[str(int(row[0]))] = CameraFlags(portrait=bool(int(row[1])), rgb=bool(int(row[2])))
        except ValueError:
            raise InputError(f"{path}:{line}: malformed row {','.join(row)!r}") from None
    return table


@dataclass(frozen=True)
class ImageProbe:
    """What one cheap decode of a camera's image says: size and colour."""

    width: int
    height: int
    rgb: bool
    black: bool

    @property
    def portrait(self) -> bool:
        return self.height > self.width


def _draft(path: Path, mode: str) -> tuple[tuple[int, int], np.ndarray]:
    """Decode a JPEG at 1/8 scale (DC coefficients only): full size and the small image."""
    try:
        from PIL import Image  # here, not at import: --help of every command stays light

        with Image.open(path) as im:
            size = im.size
            im.draft(mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
            return size, np.asarray(im.convert(mode))
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path}: unreadable image ({exc})") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) px of an image, from its header."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path}: unreadable image ({exc})") from None


def probe_image(path: str | Path) -> ImageProbe:
    """Size (from the header), RGB or monochrome, and all-black, from one DCT-scaled decode."""
    size, small = _draft(Path(path), "RGB")
    small = small.astype(np.int16)
    channel_difference = max(np.abs(small[..., 0] - small[..., 1]).max(), np.abs(small[..., 1] - small[..., 2]).max())
    return ImageProbe(width=size[0], height=size[1], rgb=bool(channel_difference > MONO_MAX_CHANNEL_DIFFERENCE),
                      black=bool(small.max() <= BLACK_MAX_LEVEL))


def is_black(path: str | Path) -> bool:
    """True when the JPEG is all black, judged from its 1/8-scale DC decode (no full decode)."""
    _, small = _draft(Path(path), "L")
    return bool(small.max() <= BLACK_MAX_LEVEL)


def black_images(paths: Iterable[Path], workers: int | None = None) -> list[bool]:
    """is_black over many files, decoded in threads (the decoder releases the GIL)."""
    paths = list(paths)
    workers = workers or min(8, usable_cpus() * 2)
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(is_black, paths, chunksize=16))


@dataclass(frozen=True)
class SequenceImages:
    """The image files of a sequence: cameras = {camera id: {frame id: file name}}."""

    folder: Path
    cameras: dict
    digest: str
    count: int

    def frames(self) -> list[int]:
        """Every frame that has an image in some camera, sorted."""
        return sorted(set().union(*(f.keys() for f in self.cameras.values())))

    def camera_folder(self, cam: str) -> Path:
        return self.folder / f"cam{cam}"

    def path(self, cam: str, frame: int) -> Path:
        return self.camera_folder(cam) / self.cameras[cam][frame]


class AnnotationFiles:
    """Paths of the split-level annotation files."""

    def __init__(self, basedir: str | Path, split: str):
        folder = annotations_folder(basedir, split)
        prefix = f"InterHand2.6M_{split}"
        self.camera = folder / f"{prefix}_camera.json"
        self.mano = folder / f"{prefix}_MANO_NeuralAnnot.json"
        self.joint_3d = folder / f"{prefix}_joint_3d.json"
        self.data = folder / f"{prefix}_data.json"


class InterHandDataset:
    """One split of an InterHand2.6M tree."""

    def __init__(self, basedir: str | Path, split: str):
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        self.basedir = Path(basedir)
        self.split = split
        self.files = AnnotationFiles(basedir, split)
        if not self.basedir.is_dir():
            raise InputError(f"{self.basedir}: dataset folder not found; check --basedir")

    def capture_dir(self, capture: int) -> Path:
        path = capture_folder(self.basedir, self.split, capture)
        if not path.is_dir():
            parent = path.parent
            found = sorted(p.name for p in parent.glob("Capture*")) if parent.is_dir() else []
            hint = f"; found {', '.join(found)}" if found else ""
            raise InputError(f"{path}: capture folder not found{hint}")
        return path

    def sequences(self, capture: int) -> list[str]:
        """The capture's sequence folders: those holding cam*/image*.jpg, sorted (`other_folders`
        are the rest: hidden folders such as .ipynb_checkpoints, empty or foreign ones)."""
        return self._folders(capture)[0]

    def other_folders(self, capture: int) -> list[str]:
        """The folders of the capture that are not sequences (no cam*/image*.jpg in them), sorted."""
        return self._folders(capture)[1]

    def _folders(self, capture: int) -> tuple[list[str], list[str]]:
        sequences, others = [], []
        for path in sorted(self.capture_dir(capture).iterdir()):
            if not path.is_dir():
                continue
            images = not path.name.startswith(".") and next(path.glob("cam*/image*.jpg"), None) is not None
            (sequences if images else others).append(path.name)
        return sequences, others

    def sequence_dir(self, capture: int, seq: str) -> Path:
        if not seq or seq in (".", "..") or "/" in seq or "\\" in seq or "\0" in seq:
            raise InputError(f"sequence {seq!r} is not a plain folder name")
        path = self.capture_dir(capture) / seq
        if not path.is_dir():
            found = self.sequences(capture)
            shown = ", ".join(found[:8]) + (" ..." if len(found) > 8 else "")
            raise InputError(f"{path}: sequence folder not found; Capture{capture} has {shown or 'no sequences'}")
        return path

    def sequence_images(self, capture: int, seq: str) -> "SequenceImages":
        """The sequence's image folders: {camera id: {frame id: image file name}} and a digest of
        the listing (names, sizes, modification times) that changes when any image does."""
        seq_dir = self.sequence_dir(capture, seq)
        images, listing = {}, hashlib.sha1()
        for cam_dir in sorted(seq_dir.iterdir()):
            match = _CAMERA_RE.match(cam_dir.name)
            if not match or not cam_dir.is_dir():
                continue
            frames = {}
            with os.scandir(cam_dir) as entries:
                for entry in sorted(entries, key=lambda e: e.name):
                    m = _IMAGE_RE.match(entry.name)
                    if not m:
                        continue
                    stat = entry.stat()
                    if stat.st_size == 0:
                        raise InputError(f"{entry.path}: empty (zero-byte) image; re-extract or remove it")
                    frames[int(m.group(1))] = entry.name
                    listing.update(f"{cam_dir.name}/{entry.name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
            if frames:
                images[match.group(1)] = frames
        if not images:
            raise InputError(f"{seq_dir}: no camera folders with images (cam<id>/image<frame>.jpg)")
        return SequenceImages(folder=seq_dir, cameras=images, digest=listing.hexdigest()[:16],
                              count=sum(len(f) for f in images.values()))

    def capture_cameras(self, capture: int) -> CameraSet:
        """All cameras of a capture in camera.json (through the per-capture cache)."""
        from .annotation_cache import load_capture_cameras

        record = load_capture_cameras(self.files.camera, capture)
        return CameraSet.from_interhand(record, source=str(self.files.camera))

    def capture_mano(self, capture: int):
        """The capture's MANO parameters (a CaptureMano, through the per-capture cache)."""
        from .annotation_cache import load_capture_mano

        return load_capture_mano(self.files.mano, capture)

    def capture_joints(self, capture: int):
        """The capture's annotated 3D joints (a CaptureJoints, through the per-capture cache)."""
        from .annotation_cache import load_capture_joints

        return load_capture_joints(self.files.joint_3d, capture)
