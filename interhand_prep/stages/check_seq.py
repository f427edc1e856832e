"""check_seq: verify a processed (or merged) sequence folder against the output contract, the way
a trainer reads it, and report the problems by kind.

What was processed (hands, MANO files, grid options, depth format) comes from the manifest, so
locating the sequence is enough; options given explicitly override it. MANO files that moved or
changed since processing are a problem (the checks that need them are skipped and named); --no-mano
skips those checks on purpose.

The mask labels are checked against the hand meshes without the renderer: sampled hand pixels of
every view are back-projected with their depth and must lie nearest the surface of the hand their
label names (see _check_labels).

Where refine_masks ran (its record in the manifest, or a mask_cihp/ folder), mask_cihp/ is checked
as mask/ is (a readable file for every view with a MANO mask, the same size, labels 0/100/200), and
against mask/ (see _check_refined_view):
- inside the MANO footprint a refined hand pixel carries mask/'s label there;
- a refined pixel labelled L lies within the bound of a mask/ pixel labelled L, where
      bound = max(2, round(band_mm * focal / depth_mm)) + 1 px
  band_mm as recorded (stages.refine_masks.recipe.options.band_mm; the default 8 where nothing is
  recorded), focal the mean of fx and fy of the camera (annots.npy), depth_mm the nearest point of
  the hands in the view's MANO mask: the least depth of their pixels in the depth map and of their
  vertices (vertices/, or the hand posed from the annotations) in front of the camera. The
  refinement moves an outline at most max(2, round(band_mm * focal / wrist depth)) px, the largest
  over the hands in the view; the wrist joint (a weighted mean of vertices) is never nearer than the
  nearest vertex, so with the vertices known this bound is never tighter (with the depth map alone
  it rests on the nearest visible point); the extra pixel covers the digital disk of the
  refinement's dilation (at most half a pixel beyond its radius);
- mask_quality.csv has its header and exactly one row per view and hand of the sequence; a row's
  mano_pixels is the hand's pixel count in mask/ (0 exactly where the status is no_hand); its
  status is refined, kept_mano_<reason> or no_hand; where it is kept_mano_<reason> the hand's
  pixels in mask_cihp/ are exactly its pixels in mask/.
A sequence without refine_masks is not a problem.

Where render_mesh wrote part labels (--parts recorded, or a parts/ folder), every view has its
parts/ image, the same size as its mask, with labels of the table (core/parts.py, 0-32); the hand
each label belongs to gives the mask exactly (the union of a hand's parts is its mask, so the two
hands' parts never mix); parts.json holds the table. Sampled part pixels are checked against the
meshes as the mask labels are: the nearest face of the pixel's hand to its back-projected centre
must belong to the pixel's part or share a vertex with a face that does (pixels on the boundary
between two parts); more than PART_MISMATCH_SHARE of a view's samples failing is a problem.
lbs/<hand>/parts.npy must be each vertex's joint of largest weight in lbs/<hand>/weights.npy.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core import parts as part_table, skinning
from ..core.constants import HANDS
from ..core.errors import InputError
from ..core.fileio import load_npy
from ..core.layout import LBS_SHARED_FILES, MASK_LABELS, PARAM_KEYS, VIEW_KINDS, SequenceLayout, render_formats
from ..core import registry
from ..core.processed import recorded_hands, recorded_source, unfinished
from ..core.manifest import Manifest, file_sha256
from ..core.mano import ManoModel, load_mano_model, model_filename
from ..core.mano_forward import forward
from ..core.options import DEFAULT_PADDING, DEFAULT_VOXEL_SIZE, RefineOptions
from ..core.safe_pickle import UnsafePickleError, read_npy

PARAMS_TOLERANCE_M = 1e-4     # float32 storage of params and vertices
MIN_VERTICES_IN_VIEW = 20     # a hand with this many vertices inside the image must show in its mask
MANO_CHECKS = "params identity, vertex count, mask labels"  # the checks that need the MANO model
# The label check (_check_labels):
LABEL_SAMPLES_PER_VIEW = 200  # hand pixels per view (split evenly between the labels present), back-projected
LABEL_AMBIGUOUS_M = 0.002     # a pixel nearer its own hand's surface than the other's + this is right
ONE_MESH_ON_M = 0.001         # with one hand's mesh only: a pixel this near it must carry its label,
ONE_MESH_OFF_M = 0.005        # and one farther than this must carry the other hand's
MIN_VISIBLE_PIXELS = 50       # a hand whose vertices show on this many pixels must have its label in the mask
VISIBLE_TOLERANCE_M = 0.004   # a vertex at most this far behind the depth map is visible there
# The refined masks (_check_refined_view): see the module docstring
REFINED_KIND = "mask_cihp"
REFINED_MIN_BAND_PX = 2       # the refinement's band is never narrower
REFINED_SLACK_PX = 1          # added to the band: the digital disk of its dilation
QUALITY_HEADER = ("frame", "camera", "hand", "mano_pixels", "refined_pixels", "iou_with_mano", "status")
QUALITY_STATUS = re.compile(r"^(refined|no_hand|kept_mano_[a-z][a-z_]*)$")
# The part labels (_check_parts_view, _check_labels)
PART_SURFACE_M = 0.001        # a sampled part pixel this near its hand's surface is checked against its nearest face
PART_MISMATCH_SHARE = 0.02    # a view whose checked samples fail more often than this is a problem
PART_MIN_MISMATCHES = 3


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
    mano_folder: Path | None = None         # where the MANO files are (for a hand get_annots did not process)
    source: tuple[Path, str, int] | None = None  # basedir, split, capture of the annotations, as recorded
    parts: bool = False                     # render_mesh wrote part labels


def _settings(layout: SequenceLayout, report: CheckReport, mano_dir: Path | None, voxel_size: float | None,
              padding: float | None, depth_format: str | None, no_mano: bool = False) -> _Settings:
    """What to check against: explicit options, else the manifest, else the defaults."""
    manifest = Manifest.read(layout.root)
    if manifest.problem:
        report.notes.append(f"{manifest.problem}: checking against the defaults and the options given")
    annots = manifest.stage(registry.GET_ANNOTS.name) or {}
    lbs = manifest.stage(registry.PREPARE_BLEND_WEIGHTS.name) or {}
    render = manifest.stage(registry.RENDER_MESH.name) or {}
    hands = list(recorded_hands(layout, manifest))
    lbs_options = (lbs.get("recipe") or {}).get("options") or {}
    render_options = (render.get("recipe") or {}).get("options") or {}
    voxel_size = voxel_size if voxel_size is not None else lbs_options.get("voxel_size", DEFAULT_VOXEL_SIZE)
    padding = padding if padding is not None else lbs_options.get("padding", DEFAULT_PADDING)
    depth_format = depth_format or render_options.get("depth_format", "npy")
    inputs = annots.get("inputs") or {}
    recorded = inputs.get("mano") or {}
    models: dict[str, ManoModel | None] = {hand: None for hand in hands}
    mano_folder = Path(mano_dir) if mano_dir is not None else None
    issues = []
    for hand in hands if not no_mano else []:
        name = model_filename(hand)
        entry = recorded.get(name) if isinstance(recorded.get(name), dict) else {}
        folder = Path(mano_dir) if mano_dir is not None else (Path(entry["path"]).parent if entry.get("path") else None)
        mano_folder = mano_folder or folder
        path = folder / name if folder else None
        if path is None:
            issues.append(f"{name}: no --mano-dir and none recorded")
        elif not path.is_file():
            issues.append(f"{name}: not found at {path}")
        elif mano_dir is None and entry.get("sha256") and file_sha256(path) != entry["sha256"]:
            issues.append(f"{name}: {path} changed since processing")
        else:
            models[hand] = load_mano_model(folder, hand)  # a broken model file: one-line error, exit status 2
    if no_mano:
        report.notes.append(f"--no-mano: skipped the checks that need the MANO model ({MANO_CHECKS})")
    elif issues:
        report.add("MANO files missing, moved or changed",
                   "; ".join(issues) + f": skipped the checks that need them ({MANO_CHECKS}); give --mano-dir DIR, "
                   "or --no-mano to skip these checks")
    parts = bool((render.get("inputs") or {}).get("parts")) or (layout.root / "parts").is_dir()
    return _Settings(hands, models, float(voxel_size), float(padding), depth_format, mano_folder,
                     recorded_source(inputs), parts=parts)


def check_sequence(root: Path, mano_dir: Path | None = None, voxel_size: float | None = None,
                   padding: float | None = None, depth_format: str | None = None, no_mano: bool = False,
                   source: tuple[Path, str, int] | None = None) -> CheckReport:
    """Check a processed or merged sequence folder. `no_mano` skips the checks that need the MANO
    model; `source` (basedir, split, capture) is where to find the annotations that pose a hand
    get_annots did not process, when the recorded dataset folder is gone."""
    layout = SequenceLayout(root)
    report = CheckReport(root=Path(root))
    if not Path(root).is_dir():
        import difflib

        parent = Path(root).parent
        siblings = sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
        close = difflib.get_close_matches(Path(root).name, siblings, n=3)
        raise InputError(f"{root}: no such sequence folder" + (f" (closest: {', '.join(close)})" if close else
                         "; check --capture, --seq, --split, --basedir and --out-root"))
    if not layout.annots.is_file():
        raise InputError(f"{layout.annots}: not found; is {root} a processed sequence folder?")
    annots = layout.read_annots()
    cams, frames = layout.read_cams(), layout.read_frames()
    cameras = layout.read_cameras()
    settings = _settings(layout, report, mano_dir, voxel_size, padding, depth_format, no_mano)
    report.counts = {"frames": len(frames), "cameras": len(cams), "hands": len(settings.hands)}
    for stage in unfinished(layout):
        report.add("stage stopped before it finished",
                   f"{layout.progress(stage)}: {stage}'s last run was stopped; rerun it (it resumes) before using the data")
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
    meshes = None
    if settings.depth_format == "none":
        report.notes.append("mask labels not checked: the sequence has no depth maps (--depth-format none)")
    elif not no_mano:
        meshes = _label_meshes(report, frames, settings, hand_vertices, source)
    refined = _refined_setup(report, layout, frames, cams)
    if settings.parts:
        _check_parts_table(report, layout)
    _check_views(report, layout, cams, frames, cameras, sizes, hand_vertices, settings.depth_format, meshes, refined,
                 settings.parts)
    if refined is not None:
        report.counts["refined views"] = refined.views
        if refined.unbounded:
            report.notes.append(f"{refined.unbounded} view(s) of {REFINED_KIND}/ not checked against the bound: no "
                                "depth of their hands known (no depth map, no vertices)")
    _check_fit_quality(report, layout, frames, settings.hands)
    return report


def _check_fit_quality(report: CheckReport, layout: SequenceLayout, frames: list[int], hands: list[str]) -> None:
    """fit_quality.csv, where get_annots wrote one: readable, a row per kept frame and hand; its
    statistics go into the report's notes."""
    from ..core.fit_quality import fit_summary

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
    lbs = {name: _load(report, "lbs file", layout.lbs_file(hand, name)) for name in LBS_SHARED_FILES}
    _check_vertex_parts(report, layout.lbs_file(hand, "parts"), lbs["parts"], lbs["weights"])
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


def _check_views(report: CheckReport, layout: SequenceLayout, cams: list[str], frames: list[int], cameras,
                 sizes: dict, hand_vertices: dict, depth_format: str, meshes: "_LabelMeshes | None" = None,
                 refined: "_Refined | None" = None, parts: bool = False) -> None:
    views = 0
    formats = {kind: fmt for kind, fmt in render_formats(depth_format, parts).items() if VIEW_KINDS[kind].checked}
    samples: dict[int, list[_ViewSample]] = defaultdict(list)
    label_problems: dict[Path, list[str]] = defaultdict(list)  # mask -> what is wrong with its labels
    for cam in cams:
        if cam not in sizes:
            continue
        width, height = sizes[cam]
        view_camera = cameras.subset([cam]) if cam in cameras.ids else None
        for frame in frames:
            views += 1
            image = layout.image(cam, frame)
            if not image.is_file():
                report.add("missing image", str(image))
            # every view file of the output-kind table: present and readable (each kind on its own, so
            # that a broken mask does not hide a broken depth map); then what each kind must hold
            loaded = {}
            for kind, fmt in formats.items():
                path = layout.view(kind, cam, frame, fmt)
                if not path.is_file():
                    report.add(f"missing {kind}", str(path))
                    continue
                try:
                    loaded[kind] = VIEW_KINDS[kind].decode(path)
                except InputError as exc:
                    report.add(f"unreadable {kind}", str(exc))
            mpath = layout.mask(cam, frame)
            mask = loaded.get("mask")
            label_counts = {}
            if mask is not None:
                if mask.shape == (height, width) and mask.dtype == np.uint8:
                    label_counts = {label: np.count_nonzero(mask == label) for label in (0, *MASK_LABELS.values())}
                if not label_counts or sum(label_counts.values()) != mask.size:  # wrong shape or type, other labels
                    report.add("wrong mask", f"{mpath}: {mask.dtype} {mask.shape}, labels {np.unique(mask)[:5]}")
                    mask = None
            depth = loaded.get("depth")  # checked also when the mask is broken: every damaged file is reported
            if depth is not None:
                dpath = layout.depth(cam, frame, depth_format)
                if depth.shape != (height, width, 1):
                    report.add("wrong depth", f"{dpath}: {depth.shape}, expected ({height}, {width}, 1)")
                    depth = None
                else:
                    depth = depth[..., 0]
                    if mask is not None and np.count_nonzero((depth > 0) != (mask > 0)) > 0.001 * mask.size:
                        report.add("depth and mask disagree", str(dpath))
            if mask is None:
                continue
            labels = loaded.get("parts")
            if labels is not None and not _check_parts_view(report, layout.parts(cam, frame), labels, mask):
                labels = None
            if refined is not None and view_camera is not None:
                posed = {**((meshes.frames.get(frame) or {}) if meshes is not None else {}),
                         **{h: v[frame] for h, v in hand_vertices.items() if frame in v}}
                _check_refined_view(report, refined, layout, cam, frame, mask, depth, view_camera, posed)
            points = [v[frame] for v in hand_vertices.values() if frame in v]
            if points and view_camera is not None:
                pixels, z = view_camera.project(np.concatenate(points) * 1000.0)
                inside = ((pixels[0, :, 0] >= 0) & (pixels[0, :, 0] < width) & (pixels[0, :, 1] >= 0)
                          & (pixels[0, :, 1] < height) & (z[0] > 0))
                if inside.sum() >= MIN_VERTICES_IN_VIEW and label_counts[0] == mask.size:
                    report.add("empty mask where the hand is in view", str(mpath))
            if meshes is not None and depth is not None and view_camera is not None and meshes.frames.get(frame):
                for hand, visible in _visible_pixels(depth, view_camera, meshes.frames[frame]).items():
                    if visible >= MIN_VISIBLE_PIXELS and not label_counts[MASK_LABELS[hand]]:
                        label_problems[mpath].append(f"the {hand} hand shows on {visible} pixels (its vertices in "
                                                     f"front of the depth map) but no pixel has its label "
                                                     f"{MASK_LABELS[hand]}")
                samples[frame].append(_label_sample(mpath, mask, depth, view_camera, labels, layout.parts(cam, frame)))
    report.counts["views"] = views
    part_problems: dict[Path, str] = {}
    if samples:
        _check_labels(report, samples, meshes, label_problems, part_problems)
    for mpath in sorted(label_problems):
        report.add("mask labels disagree with the meshes", f"{mpath}: " + "; ".join(label_problems[mpath]))
    for mpath in sorted(part_problems):
        report.add("part labels disagree with the meshes", part_problems[mpath])


# ---------------------------------------------------------------------------------------------
# The part labels (parts/, parts.json, lbs/<hand>/parts.npy)


def _check_parts_table(report: CheckReport, layout: SequenceLayout) -> None:
    import json

    path = layout.parts_json
    try:
        table = json.loads(path.read_text())["parts"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        report.add("wrong parts.json", f"{path}: {type(exc).__name__}: {exc}")
        return
    if table != [dict(row) for row in part_table.PART_TABLE]:
        report.add("wrong parts.json", f"{path}: not the part-label table of this version (core/parts.py)")


def _check_parts_view(report: CheckReport, path: Path, labels: np.ndarray, mask: np.ndarray) -> bool:
    """A part image against its (valid) mask: size, labels, and the hands they give. -> usable."""
    if labels.shape != mask.shape or labels.dtype != np.uint8:
        report.add("wrong parts", f"{path}: {labels.dtype} {labels.shape}, expected uint8 {mask.shape}")
        return False
    if labels.max() >= part_table.NUM_LABELS:
        report.add("wrong parts", f"{path}: labels {sorted(set(np.unique(labels).tolist()) - set(range(33)))[:5]} "
                                  f"are not in the table (0-{part_table.NUM_LABELS - 1})")
        return False
    implied = part_table.parts_to_mask(labels)
    differ = implied != mask
    if differ.any():
        mixed = np.count_nonzero(differ & (implied > 0) & (mask > 0))
        report.add("parts disagree with the mask",
                   f"{path}: {np.count_nonzero(differ)} pixel(s) where the parts' hand is not the mask's label"
                   + (f" ({mixed} with the other hand's parts)" if mixed else ""))
        return False
    return True


def _check_vertex_parts(report: CheckReport, path: Path, table, weights) -> None:
    """lbs/<hand>/parts.npy: (V,) int64, each vertex's joint of largest weight (weights.npy is float32:
    where its largest weights are equal, either joint is right)."""
    if table is None or weights is None:
        return
    if table.shape != (len(weights),) or table.dtype != np.int64:
        report.add("wrong vertex parts", f"{path}: {table.dtype} {table.shape}, expected int64 ({len(weights)},)")
        return
    inside = (table >= 0) & (table < weights.shape[1])
    largest = inside.copy()
    largest[inside] = weights[np.flatnonzero(inside), table[inside]] == weights[inside].max(axis=1)
    if not largest.all():
        report.add("wrong vertex parts", f"{path}: {np.count_nonzero(~largest)} vertices not at the joint of their "
                                         "largest skinning weight")


# ---------------------------------------------------------------------------------------------
# The refined masks (mask_cihp/, mask_quality.csv) against the MANO masks: the rule in the module
# docstring, worked out here from the manifest, the cameras and the depths, not from the refinement.


@dataclass
class _Refined:
    """What the refined masks of a sequence are checked with: the recorded band (mm), the rows of
    mask_quality.csv by view ({(frame, camera): {hand: row}}; None when the table is unusable, a
    problem reported already) and the hands it names; counts of the views checked and of those
    whose bound could not be worked out."""

    band_mm: float
    rows: dict[tuple[int, str], dict[str, list[str]]] | None
    hands: set[str]
    views: int = 0
    unbounded: int = 0


def _refined_setup(report: CheckReport, layout: SequenceLayout, frames: list[int],
                   cams: list[str]) -> _Refined | None:
    """The refined masks to check, when refine_masks is recorded or mask_cihp/ exists (else None)."""
    stage = registry.REFINE_MASKS.name
    record = Manifest.read(layout.root).stage(stage)
    if not isinstance(record, dict) and not (layout.root / REFINED_KIND).exists():
        return None
    if layout.progress(stage).is_file():  # reported as a stage stopped before it finished
        report.notes.append(f"{REFINED_KIND}/ not checked: {stage} was stopped before it finished")
        return None
    record = record if isinstance(record, dict) else {}
    band_mm = ((record.get("recipe") or {}).get("options") or {}).get("band_mm")
    if isinstance(band_mm, bool) or not isinstance(band_mm, (int, float)) or not 0 < band_mm < float("inf"):
        band_mm = RefineOptions().band_mm
        report.notes.append(f"{stage} records no band: {REFINED_KIND}/ checked against the default "
                            f"--band-mm {band_mm:g}")
    all_cameras = bool((record.get("inputs") or {}).get("all_cameras"))
    rows = _read_quality(report, layout, frames, cams, all_cameras)
    hands = {h for view in (rows or {}).values() for h in view}
    return _Refined(float(band_mm), rows, hands)


def _quality_row_problem(row: list[str]) -> str | None:
    """What is wrong with one row of mask_quality.csv on its own (None: nothing)."""
    if len(row) != len(QUALITY_HEADER):
        return f"{len(row)} cells, expected {len(QUALITY_HEADER)}"
    frame, cam, hand, mano_pixels, refined_pixels, iou, status = row
    if not frame.isdigit() or not cam.isdigit():
        return f"frame {frame!r} or camera {cam!r} is not a number"
    if hand not in HANDS:
        return f"hand {hand!r} is not one of {', '.join(HANDS)}"
    if not mano_pixels.isdigit() or not (refined_pixels == "" or refined_pixels.isdigit()):
        return f"pixel counts {mano_pixels!r}, {refined_pixels!r} are not counts"
    try:
        if iou != "" and not 0.0 <= float(iou) <= 1.0:
            return f"iou_with_mano {iou} is not within [0, 1]"
    except ValueError:
        return f"iou_with_mano {iou!r} is not a number"
    if not QUALITY_STATUS.match(status):
        return f"status {status!r} is not refined, kept_mano_<reason> or no_hand"
    if (status == "no_hand") != (int(mano_pixels) == 0):
        return f"status {status} with {mano_pixels} MANO pixels"
    return None


def _read_quality(report: CheckReport, layout: SequenceLayout, frames: list[int], cams: list[str],
                  all_cameras: bool) -> dict[tuple[int, str], dict[str, list[str]]] | None:
    """The rows of mask_quality.csv by view and hand; its problems on its own are reported here
    (the rows against the masks are checked with each view)."""
    path = layout.mask_quality
    if not path.is_file():
        report.add("missing mask_quality.csv", str(path))
        return None
    try:
        lines = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        report.add("unreadable mask_quality.csv", f"{path}: {exc}")
        return None
    if not lines or tuple(lines[0]) != QUALITY_HEADER:
        report.add("wrong mask_quality.csv", f"{path}: the header is not {','.join(QUALITY_HEADER)}")
        return None
    frame_set, cam_set = set(frames), set(cams)
    rows: dict[tuple[int, str], dict[str, list[str]]] = {}
    for number, row in enumerate(lines[1:], start=2):
        problem = _quality_row_problem(row)
        if problem is None:
            frame, cam, hand = int(row[0]), row[1], row[2]
            if frame not in frame_set:
                problem = f"frame {frame} is not in frames.txt"
            elif cam not in cam_set:
                if all_cameras:
                    continue  # a camera get_annots filtered out, drawn with --all-cameras
                problem = f"camera {cam} is not in cams.txt"
            elif hand in rows.get((frame, cam), {}):
                problem = f"a second row for frame {frame}, camera {cam}, {hand} hand"
        if problem is not None:
            report.add("wrong mask_quality.csv", f"{path}:{number}: {problem}")
            continue
        rows.setdefault((frame, cam), {})[hand] = row
    return rows


def _bound_px(band_mm: float, camera, mask: np.ndarray, depth: np.ndarray | None,
              posed: dict[str, np.ndarray]) -> tuple[int, float, float] | None:
    """(bound px, focal px, depth mm) of a view: the module docstring's rule over the hands in its
    MANO mask; None when no depth of them is known."""
    K, R, T = camera.K[0], camera.R[0], camera.T[0].reshape(3)
    focal = float(K[0, 0] + K[1, 1]) / 2.0
    nearest = []
    for hand, label in MASK_LABELS.items():
        pixels = mask == label
        if not pixels.any():
            continue
        if depth is not None:
            seen = depth[pixels]
            seen = seen[seen > 0]
            if seen.size:
                nearest.append(float(seen.min()) * 1000.0)
        if hand in posed:
            z = (np.asarray(posed[hand], dtype=np.float64) * 1000.0) @ R[2] + T[2]  # mm, camera z
            z = z[z > 0]
            if z.size:
                nearest.append(float(z.min()))
    if not nearest:
        return None
    depth_mm = min(nearest)
    band = max(REFINED_MIN_BAND_PX, int(round(band_mm * focal / depth_mm)))
    return band + REFINED_SLACK_PX, focal, depth_mm


def _distance_to(labels: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Euclidean distance (px) from each pixel of `where` to the nearest pixel of `labels` (bool,
    not empty), over the box holding both (which holds every pixel of `labels`: exact)."""
    from scipy import ndimage

    ys, xs = np.nonzero(labels | where)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    distance = ndimage.distance_transform_edt(~labels[box])
    return distance[where[box]]


def _check_refined_view(report: CheckReport, refined: _Refined, layout: SequenceLayout, cam: str, frame: int,
                        mask: np.ndarray, depth: np.ndarray | None, camera, posed: dict[str, np.ndarray]) -> None:
    """One view's refined mask against its MANO mask, and its rows of mask_quality.csv."""
    refined.views += 1
    path, mpath = layout.refined_mask(cam, frame), layout.mask(cam, frame)
    ours = None
    if not path.is_file():
        report.add(f"missing {REFINED_KIND}", str(path))
    else:
        try:
            ours = VIEW_KINDS[REFINED_KIND].decode(path)
        except InputError as exc:
            report.add(f"unreadable {REFINED_KIND}", str(exc))
        if ours is not None and (ours.shape != mask.shape or ours.dtype != np.uint8
                                 or not np.isin(ours, (0, *MASK_LABELS.values())).all()):
            report.add(f"wrong {REFINED_KIND}", f"{path}: {ours.dtype} {ours.shape}, labels {np.unique(ours)[:5]}; "
                                                f"the MANO mask is uint8 {mask.shape}, labels 0, 100, 200")
            ours = None
    counts = {hand: int(np.count_nonzero(mask == label)) for hand, label in MASK_LABELS.items()}
    if refined.rows is not None:
        rows = refined.rows.get((frame, cam), {})
        wanted = refined.hands | {h for h, n in counts.items() if n}
        lacking = sorted(wanted - set(rows))
        if lacking:
            report.add("mask_quality.csv lacks rows", f"{layout.mask_quality}: frame {frame}, camera {cam}: no row "
                                                      f"for the {' and '.join(lacking)} hand")
        for hand, row in sorted(rows.items()):
            if int(row[3]) != counts[hand]:
                report.add("mask_quality.csv disagrees with mask/",
                           f"{layout.mask_quality}: frame {frame}, camera {cam}, {hand} hand: {row[3]} MANO pixels, "
                           f"{mpath} has {counts[hand]}")
            label = MASK_LABELS[hand]
            differ = int(np.count_nonzero((ours == label) != (mask == label))) if ours is not None else 0
            if row[6].startswith("kept_mano_") and differ:
                report.add(f"{REFINED_KIND} differs from mask/ where mask_quality.csv says kept_mano",
                           f"{path}: the {hand} hand ({row[6]}) differs from {mpath} on {differ} pixel(s)")
    if ours is None:
        return
    relabelled = (mask > 0) & (ours > 0) & (ours != mask)
    if relabelled.any():
        report.add(f"{REFINED_KIND} relabels MANO pixels",
                   f"{path}: {np.count_nonzero(relabelled)} hand pixel(s) inside the MANO footprint carry another "
                   f"label than in {mpath}")
    beyond = []
    for hand, label in MASK_LABELS.items():
        if (ours == label).any() and not counts[hand]:
            beyond.append(f"{np.count_nonzero(ours == label)} pixel(s) at {label} ({hand}), a hand the MANO mask "
                          "does not show")
    limit = None
    if ((ours > 0) & (ours != mask)).any():
        bound = _bound_px(refined.band_mm, camera, mask, depth, posed)
        if bound is None:
            refined.unbounded += 1
        else:
            limit, focal, depth_mm = bound
    for hand, label in MASK_LABELS.items():
        outside = (ours == label) & (mask != label)
        if limit is None or not counts[hand] or not outside.any():
            continue
        distance = _distance_to(mask == label, outside)
        if (distance > limit).any():
            beyond.append(f"{np.count_nonzero(distance > limit)} pixel(s) at {label} ({hand}) up to "
                          f"{distance.max():.1f} px from the MANO {hand} hand")
    if beyond:
        rule = (f" (bound {limit} px: {refined.band_mm:g} mm at {depth_mm:.0f} mm with focal length {focal:.0f} px, "
                f"+ {REFINED_SLACK_PX} px)") if limit is not None else ""
        report.add(f"{REFINED_KIND} beyond its bound around the MANO mask", f"{path}: " + "; ".join(beyond) + rule)


# ---------------------------------------------------------------------------------------------
# The mask labels against the hand meshes, independently of the renderer: a hand pixel's depth puts
# it on the surface the renderer saw nearest, which must be the surface of the hand its label names.


@dataclass
class _LabelMeshes:
    """The meshes the masks must agree with: faces per hand, and per checked frame the world
    vertices (m) of every hand drawn in it. `unknown` names a hand that may be drawn but could not
    be posed (the label check then uses the one-mesh rule)."""

    faces: dict[str, np.ndarray]
    frames: dict[int, dict[str, np.ndarray]]
    unknown: str | None = None
    part_near: dict[str, np.ndarray] = field(default_factory=dict)  # per hand (F, 16): `_parts_near_faces`


def _parts_near_faces(model: ManoModel) -> np.ndarray:
    """(F, 16) bool: the parts of the faces that share a vertex with each face (itself included) -
    the parts a pixel may show whose back-projected centre is nearest that face."""
    faces = np.asarray(model.faces, dtype=np.int64)
    face_part = part_table.face_parts(faces, part_table.vertex_parts(model.weights))
    at_vertex = np.zeros((model.num_vertices, part_table.PARTS_PER_HAND), bool)
    for corner in range(3):
        at_vertex[faces[:, corner], face_part] = True
    return at_vertex[faces].any(axis=1)


@dataclass
class _ViewSample:
    path: Path           # the mask
    labels: np.ndarray   # N mask labels of the sampled pixels
    points: np.ndarray   # Nx3 their back-projected pixel centres, world metres
    parts: np.ndarray | None = None  # N part labels there, where the view has them
    parts_path: Path | None = None   # the part image


def _label_meshes(report: CheckReport, frames: list[int], settings: _Settings, hand_vertices: dict,
                  source: tuple[Path, str, int] | None) -> _LabelMeshes | None:
    """The processed hands' vertices/ and, for the hand get_annots did not process (masks show
    every hand with MANO in the frame), that hand posed from the annotations. None when a
    processed hand's model is missing (reported as a MANO problem already)."""
    if not settings.hands or any(settings.models.get(h) is None for h in settings.hands):
        return None
    faces = {h: np.ascontiguousarray(settings.models[h].faces, dtype=np.int64) for h in settings.hands}
    part_near = {h: _parts_near_faces(settings.models[h]) for h in settings.hands}
    # frames whose processed hands all have good vertices (the others are reported as missing or wrong)
    meshes = {f: {h: hand_vertices[h][f] for h in settings.hands} for f in frames
              if all(f in hand_vertices[h] for h in settings.hands)}
    others = [h for h in HANDS if h not in settings.hands]
    if not others:
        return _LabelMeshes(faces, meshes, part_near=part_near)
    other = others[0]
    try:
        other_faces, posed = _pose_from_annotations(other, sorted(meshes), settings, source)
    except (InputError, OSError) as exc:
        report.notes.append(f"the {other} hand (not processed, drawn where it has MANO) could not be posed from the "
                            f"annotations ({' '.join(str(exc).split())}): mask labels checked against the "
                            f"{settings.hands[0]} hand's mesh alone")
        return _LabelMeshes(faces, meshes, unknown=other, part_near=part_near)
    if posed:
        faces[other] = other_faces
        part_near[other] = _parts_near_faces(load_mano_model(settings.mano_folder, other))
        for f, vertices in posed.items():
            meshes[f][other] = vertices
    return _LabelMeshes(faces, meshes, part_near=part_near)


def _pose_from_annotations(hand: str, frames: list[int], settings: _Settings, source: tuple[Path, str, int] | None
                           ) -> tuple[np.ndarray | None, dict[int, np.ndarray]]:
    """(faces, {frame: world vertices (m)}) of `hand` in the frames where it has MANO parameters."""
    from ..core.dataset import InterHandDataset

    candidates = [s for s in (settings.source, source) if s is not None]
    if not candidates:
        raise InputError("prep.json records no dataset folder")
    if settings.mano_folder is None:
        raise InputError("no MANO folder known")
    basedir, split, capture = next((s for s in candidates if Path(s[0]).is_dir()), candidates[0])
    mano = InterHandDataset(basedir, split).capture_mano(capture)
    have = [f for f, present in zip(frames, mano.has(frames, hand)) if present]
    if not have:
        return None, {}
    model = load_mano_model(settings.mano_folder, hand)
    pose, shape, trans = mano.arrays(have, hand)
    vertices = forward(model, pose, shape, trans).vertices
    return np.ascontiguousarray(model.faces, dtype=np.int64), dict(zip(have, vertices))


def _label_sample(path: Path, mask: np.ndarray, depth: np.ndarray, camera, parts: np.ndarray | None = None,
                  parts_path: Path | None = None) -> _ViewSample:
    """Up to LABEL_SAMPLES_PER_VIEW hand pixels (mask and depth non-zero), evenly spaced in raster
    order within each label present, back-projected through their pixel centres into the world."""
    width = mask.shape[1]
    flat = mask.ravel()
    hand = np.flatnonzero(flat > 0)
    hand = hand[depth.ravel()[hand] > 0]
    labels = flat[hand]
    by_label = [hand[labels == label] for label in MASK_LABELS.values()]
    by_label = [index for index in by_label if len(index)]
    take = [min(len(index), LABEL_SAMPLES_PER_VIEW // len(by_label)) for index in by_label]
    chosen = [index[np.arange(k) * (len(index) - 1) // max(k - 1, 1)] for index, k in zip(by_label, take)]
    index = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    z_mm = depth.ravel()[index].astype(np.float64) * 1000.0
    pixels = np.stack([index % width, index // width, np.ones_like(index)]).astype(np.float64)
    K, R, T = camera.K[0], camera.R[0], camera.T[0].reshape(3, 1)
    cam_points = np.linalg.solve(K, pixels) * z_mm    # X_cam = z K^-1 (u, v, 1), mm
    world_mm = R.T @ (cam_points - T)                  # X_world = R^T (X_cam - T)
    return _ViewSample(path, flat[index], world_mm.T / 1000.0, None if parts is None else parts.ravel()[index],
                       parts_path)


def _visible_pixels(depth: np.ndarray, camera, hands: dict[str, np.ndarray]) -> dict[str, int]:
    """Per hand: the distinct pixels its vertices project to where they are not hidden (the depth
    map is 0 there, or the vertex lies at most VISIBLE_TOLERANCE_M behind it)."""
    height, width = depth.shape
    K, R, T = camera.K[0], camera.R[0], camera.T[0].reshape(3)
    out = {}
    for hand, vertices in hands.items():
        cam_points = vertices @ (R.T * 1000.0) + T          # mm, X_cam = R X_world + T
        z = cam_points[:, 2]
        ahead = z > 0
        pixels = (cam_points[ahead] @ K.T)[:, :2] / z[ahead, None]
        u, v = np.floor(pixels + 0.5).T  # pixel centres at integer coordinates
        inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
        u, v, z_m = u[inside].astype(np.int64), v[inside].astype(np.int64), z[ahead][inside] / 1000.0
        seen = depth[v, u]
        front = (seen == 0) | (z_m <= seen + VISIBLE_TOLERANCE_M)
        out[hand] = len(np.unique(v[front] * width + u[front]))
    return out


def _check_labels(report: CheckReport, samples: dict[int, list[_ViewSample]], meshes: _LabelMeshes,
                  problems: dict[Path, list[str]], part_problems: dict[Path, str] | None = None) -> None:
    """The sampled pixels of all views of a frame against that frame's meshes, batched per hand
    (closest points on the triangles, point-cloud-utils: where palms touch, a pixel can be nearer a
    vertex of the other hand than any of its own). Two hands known: a pixel whose own hand's surface
    is LABEL_AMBIGUOUS_M or more farther than the other hand's is wrong (so only the pixels at least
    that far from their own hand are measured against the other). One hand known (`meshes.unknown`):
    a pixel within ONE_MESH_ON_M of it must carry its label, one more than ONE_MESH_OFF_M away the
    other label. Samples with part labels within PART_SURFACE_M of their own hand are checked against
    that hand's nearest face (the module docstring); `part_problems` gets a line per failing view."""
    checked = 0
    parts_checked = 0
    for frame, views in samples.items():
        hands = meshes.frames[frame]
        labels = np.concatenate([s.labels for s in views])
        points = np.concatenate([s.points for s in views])
        checked += len(labels)
        wrong = np.zeros(len(labels), np.int8)  # 0 right; 1 nearer the other hand; 2 on the known hand; 3 off it
        own_face = np.full(len(labels), -1)      # the nearest face of the labelled hand, where it was asked
        if meshes.unknown is None:
            own = np.full(len(labels), np.inf)
            for hand, label in MASK_LABELS.items():
                mine = labels == label
                if mine.any() and hand in hands:
                    closest = skinning.closest_surface(points[mine], hands[hand], meshes.faces[hand])
                    own[mine], own_face[mine] = closest.distance, closest.face
            far = own >= LABEL_AMBIGUOUS_M  # the rest are on their own hand's surface: right whatever the other
            for hand, label in MASK_LABELS.items():
                theirs = far & (labels != label)
                if theirs.any() and hand in hands:
                    other = skinning.closest_surface(points[theirs], hands[hand], meshes.faces[hand]).distance
                    wrong[np.flatnonzero(theirs)[own[theirs] >= other + LABEL_AMBIGUOUS_M]] = 1
        elif hands:
            (hand, vertices), = hands.items()
            closest = skinning.closest_surface(points, vertices, meshes.faces[hand])
            distance = closest.distance
            own = np.where(labels == MASK_LABELS[hand], distance, np.inf)
            own_face = np.where(labels == MASK_LABELS[hand], closest.face, -1)
            wrong[(distance <= ONE_MESH_ON_M) & (labels != MASK_LABELS[hand])] = 2
            wrong[(distance > ONE_MESH_OFF_M) & (labels == MASK_LABELS[hand])] = 3
        start = 0
        for view in views:
            mine, labs = wrong[start:start + len(view.labels)], view.labels
            if view.parts is not None and part_problems is not None and meshes.part_near:
                parts_checked += _check_part_samples(view, own[start:start + len(labs)],
                                                     own_face[start:start + len(labs)], meshes, part_problems)
            start += len(view.labels)
            if mine.any():
                problems[view.path].insert(0, f"{np.count_nonzero(mine)} of {len(labs)} sampled hand pixels have "
                                           "the wrong label: " + ", ".join(
                                               _wrong_reason(label, code, count, hands)
                                               for (label, code), count in _group(labs[mine > 0], mine[mine > 0])))
    report.counts["label samples"] = checked
    if parts_checked:
        report.counts["part samples"] = parts_checked


def _check_part_samples(view: _ViewSample, distance: np.ndarray, face: np.ndarray, meshes: _LabelMeshes,
                        part_problems: dict[Path, str]) -> int:
    """One view's sampled part labels against the nearest faces of their hands. -> samples checked."""
    names = {v: k for k, v in MASK_LABELS.items()}
    failed = checked = 0
    for label, hand in names.items():
        use = (view.labels == label) & (distance <= PART_SURFACE_M) & (face >= 0)
        if not use.any() or hand not in meshes.part_near:
            continue
        joint = view.parts[use].astype(np.int64) - part_table.FIRST_LABEL[hand]
        ok = (joint >= 0) & (joint < part_table.PARTS_PER_HAND)
        ok[ok] = meshes.part_near[hand][face[use][ok], joint[ok]]
        checked += int(use.sum())
        failed += int(np.count_nonzero(~ok))
    if failed >= PART_MIN_MISMATCHES and failed > PART_MISMATCH_SHARE * checked:
        part_problems[view.path] = (f"{view.parts_path}: {failed} of {checked} sampled pixels show a part their "
                                    "hand's nearest face is not on or beside")
    return checked


def _group(labels: np.ndarray, codes: np.ndarray) -> list[tuple[tuple[int, int], int]]:
    keys, counts = np.unique(np.stack([labels.astype(np.int64), codes.astype(np.int64)], 1), axis=0, return_counts=True)
    return [((int(k[0]), int(k[1])), int(n)) for k, n in zip(keys, counts)]


def _wrong_reason(label: int, code: int, count: int, hands: dict) -> str:
    names = {v: k for k, v in MASK_LABELS.items()}
    own = names[label]
    if code == 1:
        other = next(h for h in MASK_LABELS if h != own)
        return f"{count} at {label} ({own}) lie nearer the {other} hand's surface"
    known = next(iter(hands))
    if code == 2:
        return f"{count} at {label} ({own}) lie on the {known} hand's surface"
    return f"{count} at {label} ({own}) lie more than {ONE_MESH_OFF_M * 1000:g} mm off the {known} hand's surface"


def main(args) -> int:
    """check-seq / check_seq.py: a folder, or --capture and --seq (with --split, --basedir, --out-root)."""
    path = args.path
    source = None
    if path is None:
        if args.capture is None or not args.seq:
            raise InputError("give a sequence folder, or --capture and --seq")
        path = SequenceLayout.for_sequence(args.basedir, args.split, args.capture, args.seq, args.out_root).root
        source = (Path(args.basedir), args.split, args.capture)
    report = check_sequence(path, args.mano_dir, args.voxel_size, args.padding, args.depth_format,
                            no_mano=getattr(args, "no_mano", False), source=source)
    print(report.summary())
    return 0 if report.ok else 1
