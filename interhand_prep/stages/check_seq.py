"""check_seq: verify a processed (or merged) sequence folder against the output contract, the way
a trainer reads it, and report the problems by kind.

What was processed (hands, MANO files, grid options, depth format) comes from the manifest, so
locating the sequence is enough; options given explicitly override it. MANO files that moved or
changed since processing are reported in one line and the checks that need them are skipped.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core import skinning
from ..core.errors import InputError
from ..core.fileio import load_npy
from ..core.layout import LBS_SHARED_FILES, PARAM_KEYS, SequenceLayout, decode_depth, decode_mask
from ..core.manifest import Manifest, file_sha256
from ..core.mano import ManoModel, forward, load_mano_model, model_filename
from ..core.options import DEFAULT_PADDING, DEFAULT_VOXEL_SIZE
from ..core.safe_pickle import UnsafePickleError, read_npy

PARAMS_TOLERANCE_M = 1e-4     # float32 storage of params and vertices
MIN_VERTICES_IN_VIEW = 20     # a hand with this many vertices inside the image must show in its mask


@dataclass
class CheckReport:
    root: Path
    counts: dict[str, int] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, message: str) -> None:
        self.problems[kind].append(message)

    def summary(self, examples: int = 3) -> str:
        # the keys are plural nouns ("frames", "cameras", "hands"): "1 hand", not "1 hands"
        counts = ", ".join(f"{v} {k[:-1] if v == 1 else k}" for k, v in self.counts.items())
        lines = [f"{self.root}: {counts}"] + [f"  note: {n}" for n in self.notes]
        if self.ok:
            lines.append("  OK: every file of the contract that could be checked is present and consistent")
        for kind, messages in self.problems.items():
            lines.append(f"  {len(messages)} x {kind}")
            lines += [f"    {m}" for m in messages[:examples]]
            if len(messages) > examples:
                lines.append(f"    ... and {len(messages) - examples} more")
        return "\n".join(lines)


def _load(report: CheckReport, kind: str, path: Path, pickled: bool = False):
    if not path.is_file():
        report.add(f"missing {kind}", str(path))
        return None
    try:
        return read_npy(path.read_bytes(), path) if pickled else load_npy(path)
    except UnsafePickleError:
        raise  # a file that would run code: refused outright, not counted as a problem of the data
    except InputError as exc:
        report.add(f"unreadable {kind}", str(exc))
        return None


@dataclass
class _Settings:
    hands: list[str]
    models: dict[str, ManoModel | None]
    voxel_size: float
    padding: float
    depth_format: str


def _settings(layout: SequenceLayout, report: CheckReport, mano_dir: Path | None, voxel_size: float | None,
              padding: float | None, depth_format: str | None) -> _Settings:
    """What to check against: explicit options, else the manifest, else the defaults."""
    manifest = Manifest.read(layout.root)
    if manifest.problem:
        report.notes.append(f"{manifest.problem}: checking against the defaults and the options given")
    annots = manifest.stage("get_annots") or {}
    lbs = manifest.stage("prepare_blend_weights") or {}
    render = manifest.stage("render_mesh") or {}
    hands = list((annots.get("result") or {}).get("hands") or layout.hands_present())
    lbs_options = (lbs.get("recipe") or {}).get("options") or {}
    render_options = (render.get("recipe") or {}).get("options") or {}
    voxel_size = voxel_size if voxel_size is not None else lbs_options.get("voxel_size", DEFAULT_VOXEL_SIZE)
    padding = padding if padding is not None else lbs_options.get("padding", DEFAULT_PADDING)
    depth_format = depth_format or render_options.get("depth_format", "npy")
    recorded = (annots.get("inputs") or {}).get("mano") or {}
    models: dict[str, ManoModel | None] = {}
    issues = []
    for hand in hands:
        name = model_filename(hand)
        entry = recorded.get(name) if isinstance(recorded.get(name), dict) else {}
        folder = Path(mano_dir) if mano_dir is not None else (Path(entry["path"]).parent if entry.get("path") else None)
        path = folder / name if folder else None
        models[hand] = None
        if path is None:
            issues.append(f"{name}: no --mano-dir and none recorded")
        elif not path.is_file():
            issues.append(f"{name}: not found at {path}")
        elif mano_dir is None and entry.get("sha256") and file_sha256(path) != entry["sha256"]:
            issues.append(f"{name}: {path} changed since processing")
        else:
            models[hand] = load_mano_model(folder, hand)
    if issues:
        report.notes.append("MANO files moved or changed (" + "; ".join(issues) + "): skipping the checks that "
                            "need them (params identity, vertex count)")
    return _Settings(hands, models, float(voxel_size), float(padding), depth_format)


def check_sequence(root: Path, mano_dir: Path | None = None, voxel_size: float | None = None,
                   padding: float | None = None, depth_format: str | None = None) -> CheckReport:
    layout = SequenceLayout(root)
    report = CheckReport(root=Path(root))
    if not layout.annots.is_file():
        raise InputError(f"{layout.annots}: not found; is {root} a processed sequence folder?")
    annots = layout.read_annots()
    cams, frames = layout.read_cams(), layout.read_frames()
    cameras = layout.read_cameras()
    settings = _settings(layout, report, mano_dir, voxel_size, padding, depth_format)
    report.counts = {"frames": len(frames), "cameras": len(cams), "hands": len(settings.hands)}
    if cameras.ids != cams:
        report.add("cams.txt differs from annots.npy", f"{cams} vs {cameras.ids}")
    if len(annots["ims"]) != len(frames):
        report.add("frames.txt differs from annots.npy", f"{len(frames)} frames, {len(annots['ims'])} ims entries")
    if frames != sorted(frames):
        report.add("frames.txt not sorted", str(layout.frames_txt))
    for frame, entry in zip(frames, annots["ims"]):
        if not isinstance(entry, dict) or entry.get("ims") != [layout.image_key(c, frame) for c in cams]:
            report.add("annots.npy ims do not match cams.txt and frames.txt", f"frame {frame}")

    from PIL import Image

    sizes = {}
    for cam in cams:
        first = layout.image(cam, frames[0]) if frames else None
        try:
            with Image.open(first) as im:
                sizes[cam] = im.size
        except (OSError, TypeError) as exc:
            report.add("missing image", f"{first}: {exc}")
    hand_vertices: dict[str, dict[int, np.ndarray]] = {}
    for hand in settings.hands:
        hand_vertices[hand] = _check_hand(report, layout, hand, frames, settings)
    _check_views(report, layout, cams, frames, cameras, sizes, hand_vertices, settings.depth_format)
    _check_fit_quality(report, layout, frames, settings.hands)
    return report


def _check_fit_quality(report: CheckReport, layout: SequenceLayout, frames: list[int], hands: list[str]) -> None:
    """fit_quality.csv, where get_annots wrote one: readable, a row per kept frame and hand; its
    statistics go into the report's notes."""
    from .get_annots import fit_summary

    if not layout.fit_quality.is_file():
        return
    try:
        rows = layout.read_fit_quality()
    except InputError as exc:
        report.add("wrong fit_quality.csv", str(exc))
        return
    listed = {(f, h) for f, h, *_ in rows}
    lacking = [f"{f} {h}" for f in frames for h in hands if (f, h) not in listed]
    if lacking:
        report.add("fit_quality.csv lacks kept frames", f"{layout.fit_quality}: {', '.join(lacking[:5])}")
    report.notes += [f"fit: {line}" for line in fit_summary(rows)]


def _check_hand(report: CheckReport, layout: SequenceLayout, hand: str, frames: list[int],
                settings: _Settings) -> dict[int, np.ndarray]:
    model = settings.models.get(hand)
    expected_vertices = model.num_vertices if model is not None else None
    vertices, params = {}, {}
    for frame in frames:
        v = _load(report, "vertices", layout.vertices(hand, frame))
        if v is not None:
            if expected_vertices is None and v.ndim == 2:
                expected_vertices = len(v)  # without the model: every frame as long as the first
            if v.shape != (expected_vertices, 3) or v.dtype != np.float32:
                report.add("wrong vertices", f"{layout.vertices(hand, frame)}: {v.dtype} {v.shape}, "
                                             f"expected float32 ({expected_vertices}, 3)")
            else:
                vertices[frame] = v.astype(np.float64)
        p = _load(report, "params", layout.params(hand, frame), pickled=True)
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
                posed = skinning.pose_space_vertices(vertices[frame][None], params[frame]["Rh"], params[frame]["Th"])[0]
                shape = skinning.grid_shape(posed, settings.voxel_size, settings.padding)
                if grid.shape[:3] != shape:
                    report.add("grid does not contain its vertices",
                               f"{path}: {grid.shape[:3]}, the vertices need {shape} (voxel {settings.voxel_size} m, "
                               f"padding {settings.padding} m)")
                if not np.allclose(grid[..., :16].sum(-1), 1.0, atol=1e-4):
                    report.add("weights do not sum to 1", str(path))
    for name in LBS_SHARED_FILES:
        _load(report, "lbs file", layout.lbs_file(hand, name))
    _load(report, "tpose params", layout.tpose_params(hand), pickled=True)
    both = [f for f in frames if f in vertices and f in params]
    if both and model is not None:  # the params identity: (vertices - Th) @ R(Rh) is MANO(poses), no global motion
        stacked = {k: np.concatenate([params[f][k] for f in both]) for k in PARAM_KEYS}
        posed = skinning.pose_space_vertices(np.stack([vertices[f] for f in both]), stacked["Rh"], stacked["Th"])
        hand_pose = stacked["poses"][:, 3:] - model.hands_mean
        reference = forward(model, np.concatenate([np.zeros((len(both), 3)), hand_pose], 1), stacked["shapes"],
                            np.zeros((len(both), 3))).vertices
        error = np.abs(posed - reference).max(axis=(1, 2))
        for f, e in zip(both, error):
            if e > PARAMS_TOLERANCE_M:
                report.add("params do not reproduce the vertices", f"{layout.params(hand, f)}: off by {e * 1000:.2f} mm")
    report.counts[f"{hand} frames"] = len(both)
    return vertices


def _check_views(report, layout, cams, frames, cameras, sizes, hand_vertices, depth_format) -> None:
    views = 0
    for cam in cams:
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
                mask = decode_mask(mpath)
            except InputError as exc:
                report.add("unreadable mask", str(exc))
                continue
            if mask.shape != (height, width) or mask.dtype != np.uint8 or not set(np.unique(mask)) <= {0, 100, 200}:
                report.add("wrong mask", f"{mpath}: {mask.dtype} {mask.shape}, labels {np.unique(mask)[:5]}")
                continue
            if depth_format != "none":
                dpath = layout.depth(cam, frame, depth_format)
                depth = None
                if not dpath.is_file():
                    report.add("missing depth", str(dpath))
                else:
                    try:
                        depth = decode_depth(dpath)
                    except InputError as exc:
                        report.add("unreadable depth", str(exc))
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


def main(args) -> int:
    """check-seq / check_seq.py: a folder, or --capture and --seq (with --split, --basedir, --out-root)."""
    path = args.path
    if path is None:
        if args.capture is None or not args.seq:
            raise InputError("give a sequence folder, or --capture and --seq")
        path = SequenceLayout.for_sequence(args.basedir, args.split, args.capture, args.seq, args.out_root).root
    report = check_sequence(path, args.mano_dir, args.voxel_size, args.padding, args.depth_format)
    print(report.summary())
    return 0 if report.ok else 1
