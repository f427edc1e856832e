"""check_seq: verify a processed (or merged) sequence folder against the output contract, the way
a trainer reads it, and report the problems by kind."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import skinning
from .blend_weights import pose_space_vertices
from .errors import InputError
from .layout import LBS_SHARED_FILES, PARAM_KEYS, SequenceLayout
from .mano import HANDS, ManoLayer, load_mano_model

PARAMS_TOLERANCE_M = 1e-4     # float32 storage of params and vertices
MIN_VERTICES_IN_VIEW = 20     # a hand with this many vertices inside the image must show in its mask


@dataclass
class CheckReport:
    root: Path
    counts: dict[str, int] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, message: str) -> None:
        self.problems[kind].append(message)

    def summary(self, examples: int = 3) -> str:
        counts = ", ".join(f"{v} {k}" for k, v in self.counts.items())
        lines = [f"{self.root}: {counts}"]
        if self.ok:
            lines.append("  OK: every file of the contract is present and consistent")
        for kind, messages in self.problems.items():
            lines.append(f"  {len(messages)} x {kind}")
            lines += [f"    {m}" for m in messages[:examples]]
            if len(messages) > examples:
                lines.append(f"    ... and {len(messages) - examples} more")
        return "\n".join(lines)


def _load(report: CheckReport, kind: str, path: Path, allow_pickle: bool = False):
    if not path.is_file():
        report.add(f"missing {kind}", str(path))
        return None
    try:
        value = np.load(path, allow_pickle=allow_pickle)
    except Exception as exc:
        report.add(f"unreadable {kind}", f"{path}: {type(exc).__name__}: {exc}")
        return None
    if isinstance(value, np.ndarray) and value.dtype == object and value.shape == ():
        value = value.item()
    return value


def check_sequence(root: Path, mano_dir: Path, voxel_size: float = 0.025, padding: float = 0.05,
                   depth_format: str = "npy") -> CheckReport:
    layout = SequenceLayout(root)
    report = CheckReport(root=Path(root))
    if not layout.annots.is_file():
        raise InputError(f"{layout.annots}: not found; is {root} a processed sequence folder?")
    annots = layout.read_annots()
    cams, frames = layout.read_cams(), layout.read_frames()
    cameras = layout.read_cameras()
    report.counts = {"frames": len(frames), "cameras": len(cams)}
    if cameras.ids != cams:
        report.add("cams.txt differs from annots.npy", f"{cams} vs {cameras.ids}")
    if len(annots["ims"]) != len(frames):
        report.add("frames.txt differs from annots.npy", f"{len(frames)} frames, {len(annots['ims'])} ims entries")
    if frames != sorted(frames):
        report.add("frames.txt not sorted", str(layout.frames_txt))
    for frame, entry in zip(frames, annots["ims"]):
        if entry.get("ims") != [layout.image_key(c, frame) for c in cams]:
            report.add("annots.npy ims do not match cams.txt and frames.txt", f"frame {frame}")
    hands = [h for h in HANDS if layout.params_dir(h).is_dir()]
    report.counts["hands"] = len(hands)

    sizes = {}
    for cam in cams:
        first = layout.image(cam, frames[0]) if frames else None
        try:
            with Image.open(first) as im:
                sizes[cam] = im.size
        except (OSError, TypeError) as exc:
            report.add("missing image", f"{first}: {exc}")
    hand_vertices: dict[str, dict[int, np.ndarray]] = {}
    for hand in hands:
        hand_vertices[hand] = _check_hand(report, layout, hand, frames, mano_dir, voxel_size, padding)
    _check_views(report, layout, cams, frames, cameras, sizes, hand_vertices, depth_format)
    return report


def _check_hand(report: CheckReport, layout: SequenceLayout, hand: str, frames: list[int], mano_dir: Path,
                voxel_size: float, padding: float) -> dict[int, np.ndarray]:
    model = load_mano_model(mano_dir, hand)
    V = model.num_vertices
    vertices, params = {}, {}
    for frame in frames:
        v = _load(report, "vertices", layout.vertices(hand, frame))
        if v is not None:
            if v.shape != (V, 3) or v.dtype != np.float32:
                report.add("wrong vertices", f"{layout.vertices(hand, frame)}: {v.dtype} {v.shape}, expected float32 ({V}, 3)")
            else:
                vertices[frame] = v.astype(np.float64)
        p = _load(report, "params", layout.params(hand, frame), allow_pickle=True)
        if p is not None:
            shapes = {k: np.shape(p.get(k)) if isinstance(p, dict) else None for k in PARAM_KEYS}
            if shapes != {k: (1, n) for k, n in PARAM_KEYS.items()}:
                report.add("wrong params", f"{layout.params(hand, frame)}: shapes {shapes}")
            else:
                params[frame] = {k: np.asarray(p[k], dtype=np.float64) for k in PARAM_KEYS}
        for kind, path, channels in (("bweights", layout.bweights(hand, frame), 17), ("bs", layout.bs(hand, frame), 3)):
            grid = _load(report, kind, path)
            if grid is None:
                continue
            if grid.ndim != 4 or grid.shape[3] != channels or grid.dtype != np.float32:
                report.add(f"wrong {kind}", f"{path}: {grid.dtype} {grid.shape}, expected float32 (X, Y, Z, {channels})")
            elif kind == "bweights" and frame in vertices and frame in params:
                posed = pose_space_vertices(vertices[frame][None], params[frame]["Rh"], params[frame]["Th"])[0]
                axes = skinning.grid_axes(posed, voxel_size, padding)
                if grid.shape[:3] != tuple(len(a) for a in axes):
                    report.add("grid does not contain its vertices",
                               f"{path}: {grid.shape[:3]}, the vertices need {tuple(len(a) for a in axes)}")
                if not np.allclose(grid[..., :16].sum(-1), 1.0, atol=1e-4):
                    report.add("weights do not sum to 1", str(path))
    for name in LBS_SHARED_FILES:
        _load(report, "lbs file", layout.lbs_file(hand, name))
    _load(report, "tpose params", layout.tpose_params(hand), allow_pickle=True)
    both = [f for f in frames if f in vertices and f in params]
    if both:  # the params identity: (vertices - Th) @ Rodrigues(Rh) is MANO(poses) without global motion
        stacked = {k: np.concatenate([params[f][k] for f in both]) for k in PARAM_KEYS}
        posed = pose_space_vertices(np.stack([vertices[f] for f in both]), stacked["Rh"], stacked["Th"])
        hand_pose = stacked["poses"][:, 3:] - model.hands_mean
        reference = ManoLayer(model)(np.concatenate([np.zeros((len(both), 3)), hand_pose], 1), stacked["shapes"],
                                     np.zeros((len(both), 3))).vertices
        error = np.abs(posed - reference).max(axis=(1, 2))
        for f, e in zip(both, error):
            if e > PARAMS_TOLERANCE_M:
                report.add("params do not reproduce the vertices", f"{layout.params(hand, f)}: off by {e * 1000:.2f} mm")
    report.counts[f"{hand} frames"] = len(both)
    return vertices


def _check_views(report, layout, cams, frames, cameras, sizes, hand_vertices, depth_format) -> None:
    views = 0
    for c, cam in enumerate(cams):
        if cam not in sizes:
            continue
        width, height = sizes[cam]
        for frame in frames:
            views += 1
            image = layout.image(cam, frame)
            if not image.is_file():
                report.add("missing image", str(image))
            mpath = layout.mask(cam, frame)
            if not mpath.is_file():
                report.add("missing mask", str(mpath))
                continue
            try:
                mask = np.asarray(Image.open(mpath))
            except (OSError, ValueError) as exc:
                report.add("unreadable mask", f"{mpath}: {exc}")
                continue
            if mask.shape != (height, width) or mask.dtype != np.uint8 or not set(np.unique(mask)) <= {0, 100, 200}:
                report.add("wrong mask", f"{mpath}: {mask.dtype} {mask.shape}, labels {np.unique(mask)[:5]}")
                continue
            if depth_format != "none":
                dpath = layout.depth(cam, frame, depth_format)
                depth = _load(report, "depth", dpath) if depth_format == "npy" else None
                if depth_format == "png16" and dpath.is_file():
                    depth = np.asarray(Image.open(dpath))[..., None]
                elif depth_format == "png16":
                    report.add("missing depth", str(dpath))
                if depth is not None:
                    if depth.shape != (height, width, 1):
                        report.add("wrong depth", f"{dpath}: {depth.shape}, expected ({height}, {width}, 1)")
                    elif ((depth[..., 0] > 0) != (mask > 0)).mean() > 0.001:
                        report.add("depth and mask disagree", str(dpath))
            points = [v[frame] for v in hand_vertices.values() if frame in v]
            if points:
                pixels, z = cameras.subset([cam]).project(np.concatenate(points) * 1000.0)
                inside = ((pixels[0, :, 0] >= 0) & (pixels[0, :, 0] < width) & (pixels[0, :, 1] >= 0)
                          & (pixels[0, :, 1] < height) & (z[0] > 0))
                if inside.sum() >= MIN_VERTICES_IN_VIEW and not mask.any():
                    report.add("empty mask where the hand is in view", str(mpath))
    report.counts["views"] = views
