"""The get_annots stage: cameras, kept frames, MANO parameters and vertices of one sequence.

Reruns follow the manifest (manifest.py): the stage does nothing when its recipe (hands, options,
MANO files, annotation files, image listing) equals the recorded one and every output exists.
Otherwise it recomputes, writes only the files whose bytes change, and removes the outputs a fresh
run with the new options would not have (frames no longer kept, hands no longer requested).
Everything that can refuse (no frame left, bad annotations, a missing model) is decided before
the first write, so a refused run leaves the folder and its manifest as they were (base.py).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core import dataset
from ..core.dataset import InterHandDataset, SequenceImages, probe_image
from ..core.errors import InputError
from ..core.fit_quality import REGRESSOR_NAME, fit_errors, fit_summary, load_joint_regressor, regress_joints
from ..core.fileio import remove_files
from ..core.layout import SequenceLayout
from ..core.manifest import file_identity, file_sha256
from ..core.mano import load_mano_model, model_filename
from ..core.mano_forward import canonical_params, easymocap_params, forward
from ..core.constants import HANDS
from ..core.options import AnnotsOptions, from_args, recipe as options_recipe
from ..core.selection import SequenceSelector, selector_from_args
from ..core.processed import mano_files
from .base import Plan, Previous, Stage, StageResult, join_reasons, run_stage, unit_digest

log = logging.getLogger(__name__)


@dataclass
class AnnotsResult(StageResult):
    """What get_annots did, for the summary."""

    hands: tuple[str, ...]
    cameras: list[str] = field(default_factory=list)
    dropped_cameras: dict[str, str] = field(default_factory=dict)
    cameras_without_images: list[str] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    dropped_frames: dict[int, str] = field(default_factory=dict)
    written: int = 0
    removed: int = 0
    hand_frames: dict[str, int] = field(default_factory=dict)  # auto: frames with MANO per hand
    fit_rows: list | None = None  # fit_quality.csv rows; None without regressor or joint annotations
    left_fix: bool | None = None  # whether the left model's shapedirs column was negated (None: no left hand)

    def summary(self) -> str:
        if self.up_to_date:
            return (f"{self.layout.root}: annotations up to date ({len(self.frames)} frames, "
                    f"{len(self.cameras)} cameras, {' and '.join(self.hands)} hand"
                    f"{'s' if len(self.hands) > 1 else ''}); nothing to do")
        lines = [f"{self.layout.root}" + (f"  ({self.reason})" if self.reason else ""),
                 f"  cameras: {len(self.cameras)} kept, {len(self.dropped_cameras)} dropped"
                 + "".join(f"\n    cam{c}: {r}" for c, r in sorted(self.dropped_cameras.items(), key=lambda x: int(x[0])))
                 + (f"\n    {len(self.cameras_without_images)} camera(s) of camera.json have no images here"
                    if self.cameras_without_images else ""),
                 f"  frames:  {len(self.frames)} kept, {len(self.dropped_frames)} dropped"]
        reasons = Counter(self.dropped_frames.values())
        for reason, count in sorted(reasons.items(), key=lambda x: -x[1]):
            frames = sorted(f for f, r in self.dropped_frames.items() if r == reason)
            lines.append(f"    {count:5d} x {reason}: frame{'s' if count > 1 else ''} {frame_ranges(frames)}")
        hands = ", ".join(self.hands)
        if self.hand_frames:
            hands += " (auto: " + ", ".join(f"{h} has MANO in {n} frames" for h, n in self.hand_frames.items()) + ")"
        lines.append(f"  hands:   {hands}")
        if self.fit_rows is not None:
            lines += [("  fit:     " if k == 0 else " " * 11) + line for k, line in enumerate(fit_summary(self.fit_rows))]
        lines.append(f"  files:   {self.written} written, {self.removed} removed;  {self.seconds:.2f} s")
        return "\n".join(lines)


def frame_ranges(frames: list[int]) -> str:
    """Sorted frame ids as compact ranges: [3, 4, 5, 9] -> '3-5, 9'."""
    parts, start = [], None
    for i, frame in enumerate(frames):
        if start is None:
            start = frame
        if i + 1 == len(frames) or frames[i + 1] != frame + 1:
            parts.append(str(start) if start == frame else f"{start}-{frame}")
            start = None
    return ", ".join(parts)


def _probe_cameras(images: SequenceImages) -> dict[str, dataset.ImageProbe]:
    """One DCT-scaled decode per camera (a few more when its first images are black)."""
    probes = {}
    for cam, frames in images.cameras.items():
        ordered = sorted(frames)
        for frame in (ordered[0], ordered[len(ordered) // 2], ordered[-1]):
            probe = probe_image(images.path(cam, frame))
            if not probe.black:
                break
        probes[cam] = probe
    return probes


def _camera_flags(images: SequenceImages, cameras_csv: Path | None) -> dict[str, dataset.CameraFlags]:
    if cameras_csv is None:
        return {cam: dataset.CameraFlags(portrait=p.portrait, rgb=p.rgb or p.black)
                for cam, p in _probe_cameras(images).items()}
    table = dataset.read_camera_table(cameras_csv)
    missing = [cam for cam in images.cameras if cam not in table]
    if missing:
        raise InputError(f"{cameras_csv}: no row for camera(s) {', '.join(missing)}")
    return {cam: table[cam] for cam in images.cameras}


def select_frames(images: dict[str, dict[int, str]], cameras: list[str], mano, hands: tuple[str, ...],
                  ) -> tuple[list[int], dict[int, str]]:
    """Frames present in every kept camera and with MANO for every requested hand.

    mano : CaptureMano. Returns the candidates (sorted) and {dropped frame: reason}.
    """
    dropped = {}
    all_frames = sorted(set().union(*(images[c].keys() for c in cameras)))
    in_all = []
    for frame in all_frames:
        lacking = [c for c in cameras if frame not in images[c]]
        if lacking:
            dropped[frame] = f"image missing in cam{lacking[0]}" + (f" and {len(lacking) - 1} more" if len(lacking) > 1 else "")
        else:
            in_all.append(frame)
    has = {hand: mano.has(in_all, hand) for hand in hands}
    kept = []
    for k, frame in enumerate(in_all):
        no_mano = [h for h in hands if not has[h][k]]
        if no_mano:
            dropped[frame] = f"no MANO for the {' and '.join(no_mano)} hand"
        else:
            kept.append(frame)
    return kept, dropped


def resolve_hands(sel: SequenceSelector, images: SequenceImages, mano) -> tuple[tuple[str, ...], dict[str, int]]:
    """The hands to process: fixed by --hand-type, or (auto) every hand with MANO parameters in
    some frame of the sequence. -> (hands, {hand: frames with MANO} for auto)."""
    if sel.fixed_hands:
        return sel.fixed_hands, {}
    frames = images.frames()
    counts = {hand: int(mano.has(frames, hand).sum()) for hand in HANDS}
    hands = tuple(h for h in HANDS if counts[h])
    if not hands:
        raise InputError(f"{mano.source}: no frame of {images.folder} has MANO parameters for either hand")
    return hands, counts


def regressor_path(sel: SequenceSelector, opts: AnnotsOptions) -> Path:
    """InterHand2.6M's joint regressor: --joint-regressor, else beside the MANO model."""
    return Path(opts.joint_regressor) if opts.joint_regressor else Path(sel.mano_dir) / REGRESSOR_NAME


def _recipe(sel: SequenceSelector, opts: AnnotsOptions, ds: InterHandDataset, images: SequenceImages,
            hands: tuple[str, ...]) -> tuple[dict, dict]:
    """(recipe, inputs) of a run: the recipe holds what decides the outputs, inputs the paths."""
    files = [p for p in mano_files(sel.mano_dir, hands)]
    for path in files:
        if not path.is_file():
            load_mano_model(path.parent, "right" if path.name == model_filename("right") else "left")  # clear error
    mano = {p.name: file_sha256(p) for p in files}
    table = opts.cameras_csv
    regressor = regressor_path(sel, opts)
    options = {**options_recipe(opts), "cameras_csv": file_sha256(table) if table and Path(table).is_file() else None,
               "joint_regressor": file_sha256(regressor) if regressor.is_file() else None}
    annotations = {"camera": file_identity(ds.files.camera), "mano": file_identity(ds.files.mano),
                   "joint_3d": file_identity(ds.files.joint_3d)}
    layout = sel.layout
    links_to = os.path.relpath(images.folder.resolve(), layout.root.resolve()) if sel.out_root is not None else None
    recipe = {"hands": list(hands), "options": options, "mano": mano,
              "annotations": {k: {"size": v["size"], "mtime_ns": v["mtime_ns"]} for k, v in annotations.items()},
              "images": {"files": images.count, "digest": images.digest}, "links_to": links_to}
    inputs = {"hand_type": sel.hand_type, "basedir": str(Path(sel.basedir).resolve()),
              "mano": {p.name: {"path": str(p.resolve()), "sha256": mano[p.name]} for p in files},
              "annotations": annotations, "cameras_csv": str(Path(table).resolve()) if table else None,
              "joint_regressor": str(regressor.resolve()) if regressor.is_file() else None,
              "images": str(images.folder.resolve())}
    return recipe, inputs


def _missing_outputs(layout: SequenceLayout, hands: tuple[str, ...]) -> str | None:
    """The first output of a finished run that is absent, or None."""
    for path in (layout.annots, layout.cams_txt, layout.frames_txt):
        if not path.is_file():
            return str(path.relative_to(layout.root))
    frames = layout.read_frames()
    for hand in hands:
        for kind in ("params", "vertices"):
            present = layout.existing_frame_files(kind, hand)
            lacking = [f for f in frames if f not in present]
            if lacking:
                return f"{kind}/{hand}/{lacking[0]}.npy"
        if not layout.tpose_params(hand).is_file():
            return f"params/{hand}/tpose.npy"
    return None


SEQUENCE_UNIT = "sequence"  # get_annots is one unit of work: an interrupted run is redone whole


@dataclass
class _Inputs:
    ds: InterHandDataset
    images: SequenceImages
    hands: tuple[str, ...]
    counts: dict[str, int]


class GetAnnots(Stage):
    def check(self, sel: SequenceSelector, opts: AnnotsOptions) -> None:
        for given, what in ((opts.cameras_csv, "camera table"), (opts.joint_regressor, "joint regressor")):
            if given is not None and not Path(given).is_file():  # a path the user typed must exist
                raise InputError(f"{given}: {what} not found")

    def plan(self, sel: SequenceSelector, opts: AnnotsOptions, previous: Previous) -> Plan:
        ds = InterHandDataset(sel.basedir, sel.split)
        images = ds.sequence_images(sel.capture, sel.seq)  # a clear error first if the sequence is absent
        mano = ds.capture_mano(sel.capture) if sel.fixed_hands is None else None
        hands, counts = resolve_hands(sel, images, mano)
        recipe, inputs = _recipe(sel, opts, ds, images, hands)
        layout = sel.layout
        reason = "--overwrite" if sel.overwrite else previous.manifest.stale_reason(self.name, recipe)
        if reason is None and (missing := _missing_outputs(layout, hands)):
            reason = f"output {missing} is missing"
        recorded = previous.record.get("result") or {}
        if reason is None and recorded.get("fit_quality") and not layout.fit_quality.is_file():
            reason = "output fit_quality.csv is missing"
        reason = join_reasons(reason, "an earlier run was stopped before it finished" if previous.interrupted else None)
        return Plan(reason, recipe, inputs, todo={SEQUENCE_UNIT: unit_digest(recipe)}, total=1,
                    data=_Inputs(ds, images, hands, counts))

    def new_result(self, sel: SequenceSelector, opts: AnnotsOptions, plan: Plan) -> AnnotsResult:
        data: _Inputs = plan.data
        result = AnnotsResult(layout=sel.layout, hands=data.hands, hand_frames=data.counts)
        if plan.reason is None:
            result.cameras, result.frames = sel.layout.read_cams(), sel.layout.read_frames()
        return result

    def prepare(self, sel: SequenceSelector, opts: AnnotsOptions, plan: Plan, result: AnnotsResult):
        data: _Inputs = plan.data
        return _compute(sel, opts, data.ds, data.images, data.hands, result)

    def write(self, sel, opts: AnnotsOptions, plan: Plan, outputs: "_Outputs", result: AnnotsResult, done, lock,
              progress: bool) -> None:
        result.written, result.removed = _write_outputs(sel, outputs, progress)
        result.cameras, result.frames = outputs.cameras.ids, outputs.frames
        done([SEQUENCE_UNIT])

    def record_result(self, plan: Plan, result: AnnotsResult) -> dict:
        hands = plan.data.hands
        return {"hands": list(hands), "cameras": len(result.cameras), "frames": len(result.frames),
                "dropped_frames": len(result.dropped_frames), "dropped_cameras": len(result.dropped_cameras),
                "fit_quality": result.fit_rows is not None, "left_fix_applied": result.left_fix}


STAGE = GetAnnots()


def run(sel: SequenceSelector, opts: AnnotsOptions | None = None, progress: bool = True) -> AnnotsResult:
    """Run get_annots for one sequence (if anything is stale); docs/outputs.md describes the outputs."""
    return run_stage(STAGE, sel, opts or AnnotsOptions(), progress)


@dataclass
class _Posed:
    """One hand's MANO of the candidate frames: EasyMocap parameters, vertices and joints."""

    params: dict[str, np.ndarray]
    vertices: np.ndarray
    joints: np.ndarray
    shapes: np.ndarray

    def subset(self, index: np.ndarray) -> "_Posed":
        return _Posed({k: v[index] for k, v in self.params.items()}, self.vertices[index], self.joints[index],
                      self.shapes[index])


def _pose(models: dict, mano, frames: list[int]) -> dict[str, _Posed]:
    """Every hand's entries of `frames` checked (a clear error for a bad one) and posed."""
    posed = {}
    for hand, model in models.items():
        pose, shape, trans = mano.arrays(frames, hand)
        out = forward(model, pose, shape, trans)
        posed[hand] = _Posed(easymocap_params(pose, shape, trans, out.joints[:, 0], model.hands_mean), out.vertices,
                             out.joints, shape)
    return posed


@dataclass
class _Outputs:
    """Everything get_annots writes, computed before the first write."""

    models: dict
    posed: dict[str, _Posed]
    cameras: object  # CameraSet of the kept cameras
    frames: list[int]
    images: SequenceImages
    fit: list | None


def _compute(sel: SequenceSelector, opts: AnnotsOptions, ds: InterHandDataset, images: SequenceImages,
             hands: tuple[str, ...], result: AnnotsResult) -> _Outputs:
    all_cameras = ds.capture_cameras(sel.capture)
    no_params = [cam for cam in images.cameras if cam not in all_cameras.ids]
    if no_params:
        raise InputError(f"{ds.files.camera}: no parameters for camera(s) {', '.join('cam' + c for c in no_params)} "
                         f"of {images.folder}")
    result.cameras_without_images = [c for c in all_cameras.ids if c not in images.cameras]
    flags = _camera_flags(images, opts.cameras_csv)
    kept_cams = []
    for cam in sorted(images.cameras, key=int):
        if not flags[cam].portrait and not opts.keep_landscape:
            result.dropped_cameras[cam] = "landscape (pass --keep-landscape to keep)"
        else:
            kept_cams.append(cam)
    if not kept_cams:
        raise InputError(f"{images.folder}: no camera left after filtering ({len(result.dropped_cameras)} landscape)")

    mano = ds.capture_mano(sel.capture)
    candidates, dropped = select_frames(images.cameras, kept_cams, mano, hands)
    rgb_cams = [c for c in kept_cams if flags[c].rgb] if not opts.keep_black_frames else []
    pairs = [(f, c) for f in candidates for c in rgb_cams]
    # The black-frame check (a DC-only decode per image, in threads) runs beside the model loading
    # and the forward pass of every candidate frame, off the critical path.
    with ThreadPoolExecutor(max_workers=1) as background:
        black = background.submit(dataset.black_images, [images.path(c, f) for f, c in pairs])
        models = {hand: load_mano_model(sel.mano_dir, hand) for hand in hands}
        posed = _pose(models, mano, candidates) if candidates else {}
        black_frames = {}
        for (f, c), is_black in zip(pairs, black.result()):
            if is_black:
                black_frames.setdefault(f, c)
    for f, c in black_frames.items():
        dropped[f] = f"all black in an RGB camera (first: cam{c})"
    keep = np.array([f not in black_frames for f in candidates], dtype=bool)
    fit = None
    if keep.any():
        fit = _fit_quality(sel, opts, ds, models, {h: p.subset(np.flatnonzero(keep)) for h, p in posed.items()},
                           [f for f, k in zip(candidates, keep) if k])
    result.fit_rows = fit
    if fit is not None and opts.max_joint_error is not None:
        too_far = {f for f, _, mean, _, _ in fit if np.isfinite(mean) and mean > opts.max_joint_error}
        for f in too_far:
            dropped[f] = f"MANO fit off the annotated joints by more than {opts.max_joint_error:g} mm (mean)"
        keep &= np.array([f not in too_far for f in candidates], dtype=bool)
    frames = [f for f, k in zip(candidates, keep) if k]
    result.dropped_frames = dict(sorted(dropped.items()))
    if not frames:
        reasons = Counter(dropped.values()).most_common(3)
        raise InputError(f"{images.folder}: no frame left for the {'+'.join(hands)} hand(s); dropped "
                         + "; ".join(f"{n} x {r}" for r, n in reasons))
    posed = {hand: p.subset(np.flatnonzero(keep)) for hand, p in posed.items()}
    result.left_fix = models["left"].left_fix if "left" in models else None
    return _Outputs(models, posed, all_cameras.subset(kept_cams), frames, images, fit)


def _fit_quality(sel: SequenceSelector, opts: AnnotsOptions, ds: InterHandDataset, models: dict,
                 posed: dict[str, "_Posed"], frames: list[int]) -> list[tuple] | None:
    """Rows (frame, hand, mean mm, max mm, valid joints) of the MANO fit's joint errors, or None
    (with one warning line) when the regressor or the joint annotations are absent."""
    regressor_file = regressor_path(sel, opts)
    missing = [p for p in (regressor_file, ds.files.joint_3d) if not p.is_file()]
    if missing:
        message = f"{missing[0]}: not found, so no fit_quality.csv (the MANO fit's error per frame)"
        if opts.max_joint_error is not None:
            raise InputError(f"{missing[0]}: not found; --max-joint-error needs the joint regressor and the "
                             "joint_3d annotations")
        log.warning(message)
        return None
    joints = ds.capture_joints(sel.capture)
    errors = {}
    for hand, model in models.items():
        regressor = load_joint_regressor(regressor_file, model.num_vertices)
        annotated, valid = joints.arrays(frames, hand)
        errors[hand] = fit_errors(regress_joints(regressor, posed[hand].vertices), annotated, valid)
    return [(frame, hand, errors[hand].mean[i], errors[hand].max[i], errors[hand].valid_joints[i])
            for i, frame in enumerate(frames) for hand in models]


def _write_outputs(sel: SequenceSelector, outputs: _Outputs, progress: bool) -> tuple[int, int]:
    """Write every output (unchanged files are left alone); remove the ones no longer produced.
    -> (files written, files removed)."""
    from tqdm import tqdm

    layout = sel.layout
    models, posed, cameras, frames = outputs.models, outputs.posed, outputs.cameras, outputs.frames
    images, fit = outputs.images, outputs.fit
    written = 0
    for hand, hand_posed in posed.items():
        bar = tqdm(frames, desc=f"{sel.seq} {hand} params+vertices", unit="frame", disable=not progress, leave=False)
        for i, frame in enumerate(bar):
            written += layout.write_params(layout.params(hand, frame), {k: v[i] for k, v in hand_posed.params.items()})
            written += layout.write_vertices(layout.vertices(hand, frame), hand_posed.vertices[i])
        written += layout.write_params(layout.tpose_params(hand), canonical_params(
            models[hand].hands_mean, hand_posed.shapes[0], hand_posed.joints[0, 0]))
    if sel.out_root is not None:
        written += _link_cameras(layout, images)
    written += layout.write_ids(layout.cams_txt, cameras.ids)
    written += layout.write_ids(layout.frames_txt, frames)
    written += layout.write_annots(cameras, frames)
    keep = set(frames)
    stale = [] if fit is not None else [layout.fit_quality]
    if fit is not None:
        written += layout.write_fit_quality(fit)
    for hand in HANDS:
        for kind in ("params", "vertices"):
            stale += [p for f, p in layout.existing_frame_files(kind, hand).items() if hand not in models or f not in keep]
        if hand not in models:
            stale.append(layout.tpose_params(hand))
    return written, remove_files(stale, layout.root)


def _link_cameras(layout: SequenceLayout, images: SequenceImages) -> int:
    """cam<id> symbolic links (relative) from the output folder to the image folders. -> links made."""
    layout.root.mkdir(parents=True, exist_ok=True)
    made = 0
    for cam in images.cameras:
        link = layout.camera_dir(cam)
        target = Path(os.path.relpath(images.camera_folder(cam).resolve(), layout.root.resolve()))
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        if link.exists() and not link.is_symlink():
            raise InputError(f"{link}: exists and is not a link to the images; remove it or pick another --out-root")
        tmp = link.with_name(f".{link.name}.link.tmp")
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(target, target_is_directory=True)
        os.replace(tmp, link)
        made += 1
    stale = [p for cam, p in layout.existing_camera_links().items() if cam not in images.cameras]
    for path in stale:
        path.unlink()
    return made


def main(args) -> int:
    """get-annots / get_annots.py"""
    result = run(selector_from_args(args), from_args(AnnotsOptions, args), progress=not args.quiet)
    print(result.summary())
    return 0
