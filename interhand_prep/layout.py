"""Where every output file of a processed sequence lives, with one reader and writer per kind.

A processed sequence folder (the output contract the trainers read):
    annots.npy                       {"cams": {"K","R","T","D": {cam_id: array}}, "ims": [{"ims": [...]}]}
    cams.txt, frames.txt             kept camera ids / frame ids, one per line, sorted numerically
    cam<id>/image<frame>.jpg         the images (symbolic links when written under --out-root)
    params/<hand>/<frame>.npy        {"poses" 1x48, "Rh" 1x3, "Th" 1x3 (m), "shapes" 1x10}
    params/<hand>/tpose.npy          the canonical parameters
    vertices/<hand>/<frame>.npy      778x3 float32 world coordinates (m)
    lbs/<hand>/{faces,parents,weights,joints,tvertices,tbw}.npy, bweights/<frame>.npy, bs/<frame>.npy
                                     skinning grids (prepare_blend_weights.py)
    mask/cam<id>/image<frame>.png    hand masks (render_mesh.py)
    depth/cam<id>/image<frame>.npy   depth maps (render_mesh.py)
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from .cameras import CameraSet
from .dataset import image_name
from .errors import InputError
from .fileio import load_npy, save_npy, write_text

PARAM_KEYS = {"poses": 48, "Rh": 3, "Th": 3, "shapes": 10}
LBS_SHARED_FILES = ("faces", "parents", "weights", "joints", "tvertices", "tbw")


def sequence_input_dir(basedir: str | Path, split: str, capture: int, seq: str) -> Path:
    return Path(basedir) / "images" / split / f"Capture{capture}" / seq


class SequenceLayout:
    """All output paths of one processed (or merged) sequence folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def for_sequence(cls, basedir: str | Path, split: str, capture: int, seq: str,
                     out_root: str | Path | None = None) -> "SequenceLayout":
        """The sequence's image folder itself, or <out_root>/<split>/Capture<N>/<seq>."""
        if out_root is None:
            return cls(sequence_input_dir(basedir, split, capture, seq))
        return cls(Path(out_root) / split / f"Capture{capture}" / seq)

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

    def camera_dir(self, cam: str) -> Path:
        return self.root / f"cam{cam}"

    @staticmethod
    def image_key(cam: str, frame: int) -> str:
        """An image as listed in annots.npy, relative to the sequence folder."""
        return f"cam{cam}/{image_name(frame)}"

    def image(self, cam: str, frame: int) -> Path:
        return self.root / self.image_key(cam, frame)

    def params_dir(self, hand: str) -> Path:
        return self.root / "params" / hand

    def params(self, hand: str, frame: int) -> Path:
        return self.params_dir(hand) / f"{int(frame)}.npy"

    def tpose_params(self, hand: str) -> Path:
        return self.params_dir(hand) / "tpose.npy"

    def vertices(self, hand: str, frame: int) -> Path:
        return self.root / "vertices" / hand / f"{int(frame)}.npy"

    def mask(self, cam: str, frame: int) -> Path:
        """mask/cam<id>/image<frame>.png"""
        return (self.root / "mask" / self.image_key(cam, frame)).with_suffix(".png")

    def depth(self, cam: str, frame: int, depth_format: str = "npy") -> Path:
        """depth/cam<id>/image<frame>.npy (float32 metres) or .png (png16: uint16, 0.1 mm)."""
        return (self.root / "depth" / self.image_key(cam, frame)).with_suffix(".png" if depth_format == "png16" else ".npy")

    @property
    def seqs_txt(self) -> Path:
        """The source sequences of a merged sequence, one per line."""
        return self.root / "seqs.txt"

    def lbs_dir(self, hand: str) -> Path:
        return self.root / "lbs" / hand

    def lbs_file(self, hand: str, name: str) -> Path:
        """Shared skinning files: faces, parents, weights, joints, tvertices, tbw (.npy)."""
        if name not in LBS_SHARED_FILES:
            raise ValueError(f"unknown lbs file {name!r}; expected one of {LBS_SHARED_FILES}")
        return self.lbs_dir(hand) / f"{name}.npy"

    def bweights(self, hand: str, frame: int) -> Path:
        return self.lbs_dir(hand) / "bweights" / f"{int(frame)}.npy"

    def bs(self, hand: str, frame: int) -> Path:
        return self.lbs_dir(hand) / "bs" / f"{int(frame)}.npy"

    # -- readers and writers -------------------------------------------------------------------
    def write_annots(self, cameras: CameraSet, frames: Iterable[int]) -> None:
        """annots.npy for `cameras` (in cams.txt order) and `frames` (in frames.txt order)."""
        cams = {
            "K": {cam: cameras.K[c].copy() for c, cam in enumerate(cameras.ids)},
            "R": {cam: cameras.R[c].copy() for c, cam in enumerate(cameras.ids)},
            "T": {cam: cameras.T[c].reshape(3, 1).copy() for c, cam in enumerate(cameras.ids)},
            "D": {cam: np.zeros((5, 1)) for cam in cameras.ids},
        }
        ims = [{"ims": [self.image_key(cam, frame) for cam in cameras.ids]} for frame in frames]
        save_npy(self.annots, {"cams": cams, "ims": ims})

    def read_annots(self) -> dict:
        annots = load_npy(self.annots, allow_pickle=True)
        if not isinstance(annots, dict) or "cams" not in annots or "ims" not in annots:
            raise InputError(f"{self.annots}: not an annots.npy (expected a dict with 'cams' and 'ims')")
        return annots

    def read_cameras(self) -> CameraSet:
        """The cameras of annots.npy as a CameraSet, in cams.txt order."""
        cams = self.read_annots()["cams"]
        ids = list(cams["K"])
        return CameraSet(ids=ids, K=np.stack([cams["K"][i] for i in ids]), R=np.stack([cams["R"][i] for i in ids]),
                         T=np.stack([np.asarray(cams["T"][i]).reshape(3) for i in ids]))

    @staticmethod
    def write_ids(path: Path, ids: Iterable) -> None:
        write_text(path, "".join(f"{i}\n" for i in ids))

    @staticmethod
    def read_ids(path: Path) -> list[str]:
        if not path.is_file():
            raise InputError(f"{path}: not found (run get_annots.py first)")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]

    def read_frames(self) -> list[int]:
        try:
            return [int(f) for f in self.read_ids(self.frames_txt)]
        except ValueError:
            raise InputError(f"{self.frames_txt}: frame ids must be integers") from None

    def read_cams(self) -> list[str]:
        return self.read_ids(self.cams_txt)

    @staticmethod
    def write_params(path: Path, params: dict[str, np.ndarray]) -> None:
        save_npy(path, {k: np.asarray(params[k], dtype=np.float32).reshape(1, n) for k, n in PARAM_KEYS.items()})

    @staticmethod
    def read_params(path: Path) -> dict[str, np.ndarray]:
        params = load_npy(path, allow_pickle=True)
        if not isinstance(params, dict):
            raise InputError(f"{path}: not a parameter file (expected a pickled dict)")
        for key, n in PARAM_KEYS.items():
            value = params.get(key)
            if value is None or np.asarray(value).shape != (1, n):
                shape = None if value is None else np.asarray(value).shape
                raise InputError(f"{path}: '{key}' has shape {shape}, expected (1, {n})")
        return params

    @staticmethod
    def write_vertices(path: Path, vertices: np.ndarray) -> None:
        save_npy(path, np.asarray(vertices, dtype=np.float32))

    @staticmethod
    def read_vertices(path: Path, num_vertices: int | None = None) -> np.ndarray:
        vertices = load_npy(path)
        if vertices.ndim != 2 or vertices.shape[1] != 3 or (num_vertices and len(vertices) != num_vertices):
            raise InputError(f"{path}: vertices have shape {vertices.shape}, expected ({num_vertices or 'V'}, 3)")
        return vertices
