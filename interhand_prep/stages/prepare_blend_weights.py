"""The prepare_blend_weights stage: skinning-weight and blend-shape grids of a processed sequence.

Per processed hand, into lbs/<hand>/ (metres, float32 grids of shape X x Y x Z x C):
    faces, parents, weights, joints, tvertices    the model's topology, skinning and rest pose
    tbw                  canonical grid around tvertices: 16 closest-surface-point weights + distance
    bweights/<frame>     grid around the frame's pose-space vertices: 16 weights of the nearest
                         vertex (closest surface point with --surface-weights) + distance
    bs/<frame>           grid around the frame's unposed vertices: shape + pose blend-shape offsets
                         (3 channels) interpolated at the closest surface point

Reruns: the grid options decide whether everything is redone, a hand's MANO files whether all of
its frames are, and a digest of each frame's params and vertices which of its frames are. Grids of frames or hands
no longer processed are removed.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core import skinning
from .get_annots import mano_files, processed_hands
from ..core.errors import InputError
from ..core.fileio import check_free_space, remove_files, save_npy
from ..core.locking import die_with_parent, sequence_lock
from ..core.layout import LBS_SHARED_FILES, SequenceLayout, write_grid
from ..core.manifest import Manifest, file_digest, file_sha256, stage_record
from ..core.mano import ManoModel, load_mano_model, model_filename, shaped_joints
from ..core.constants import HANDS
from ..core.options import BlendWeightOptions, from_args, recipe as options_recipe
from ..core.selection import SequenceSelector, selector_from_args

STAGE = "prepare_blend_weights"
# Below this many grid points in total (about 50 frames at the default voxel), forking workers
# costs more than it saves.
PARALLEL_MIN_POINTS = 50_000
FRAMES_PER_TASK = 8  # tasks of ~50 ms: Ctrl-C stops within a second, progress is smooth


@dataclass
class BlendWeightResult:
    layout: SequenceLayout
    written: dict[str, int] = field(default_factory=dict)   # hand -> frames computed
    skipped: dict[str, int] = field(default_factory=dict)   # hand -> frames up to date
    removed: int = 0
    grid_shape: dict[str, tuple] = field(default_factory=dict)
    reason: str = ""
    up_to_date: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        if self.up_to_date:
            frames = ", ".join(f"{h} {n} frames" for h, n in self.skipped.items())
            return f"{self.layout.root / 'lbs'}: grids up to date ({frames}); nothing to do"
        lines = [f"{self.layout.root / 'lbs'}" + (f"  ({self.reason})" if self.reason else "")]
        for hand in self.written:
            lines.append(f"  {hand}: {self.written[hand]} frames computed, {self.skipped[hand]} up to date"
                         + (f"; canonical grid {self.grid_shape[hand]}" if hand in self.grid_shape else ""))
        total = sum(self.written.values())
        lines.append(f"  {total} frame grids, {self.removed} files removed, in {self.seconds:.2f} s"
                     + (f" ({total / self.seconds:.0f} frames/s)" if total and self.seconds else ""))
        return "\n".join(lines)


def frame_input_digests(layout: SequenceLayout, hand: str, frames: list[int]) -> dict[str, str | None]:
    """{frame: digest of its params and vertices files} (None where one is missing)."""
    return {str(f): file_digest(layout.params(hand, f), layout.vertices(hand, f)) for f in frames}


def _read_frames(layout: SequenceLayout, hand: str, frames: list[int], num_vertices: int):
    vertices = np.stack([layout.read_vertices(layout.vertices(hand, f), num_vertices) for f in frames]).astype(np.float64)
    params = [layout.read_params(layout.params(hand, f)) for f in frames]
    stacked = {k: np.concatenate([p[k] for p in params]).astype(np.float64) for k in ("poses", "Rh", "Th", "shapes")}
    return vertices, stacked


# ---------------------------------------------------------------------------------------------
# Grid work: tasks of a few frames, in this process or in forked workers

_worker_state: dict = {}


def _init_worker(parent: int, models: dict[str, ManoModel], layout_root: str, opts: BlendWeightOptions) -> None:
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it stops the pool on Ctrl-C
    _worker_state.update(models=models, layout=SequenceLayout(layout_root), opts=opts)


def _grids_task(hand: str, frames: list[int]) -> int:
    s = _worker_state
    return frame_grids_of(s["models"][hand], s["layout"], hand, frames, s["opts"])


def frame_grids_of(model: ManoModel, layout: SequenceLayout, hand: str, frames: list[int],
                   opts: BlendWeightOptions) -> int:
    """Read `frames`' params and vertices, compute their bweights and bs grids and write them
    (writes overlap the next frame's queries). Every step is per frame: a frame's grids do not
    depend on the frames it is computed with."""
    vertices, params = _read_frames(layout, hand, frames, model.num_vertices)
    posed = skinning.pose_space_vertices(vertices, params["Rh"], params["Th"])
    unposed = skinning.unposed_vertices(model, posed, params["poses"], params["shapes"])
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending = []
        for k, frame in enumerate(frames):
            bweights, bs = skinning.frame_grids(model, posed[k], unposed[k], opts.voxel_size, opts.padding,
                                                opts.surface_weights)
            pending.append(writer.submit(write_grid, layout.bweights(hand, frame), bweights))
            pending.append(writer.submit(write_grid, layout.bs(hand, frame), bs))
        for future in pending:
            future.result()
    return len(frames)


def _compute(models: dict[str, ManoModel], layout: SequenceLayout, todo: dict[str, list[int]], opts: BlendWeightOptions,
             bar) -> None:
    tasks = [(hand, frames[s:s + FRAMES_PER_TASK]) for hand, frames in todo.items()
             for s in range(0, len(frames), FRAMES_PER_TASK)]
    points = sum(len(frames) for frames in todo.values()) * _grid_points(layout, todo, opts)
    workers = min(opts.lbs_workers or os.cpu_count() or 1, len(tasks))
    if points < PARALLEL_MIN_POINTS or workers < 2:
        for hand, frames in tasks:
            bar.update(frame_grids_of(models[hand], layout, hand, frames, opts))
        return
    # fork: the workers inherit the imports, the models and the sequence lock's descriptor (the
    # lock lasts until the last of them is gone); they die with this process
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(os.getpid(), models, str(layout.root), opts)) as pool:
        jobs = [pool.submit(_grids_task, hand, frames) for hand, frames in tasks]
        try:
            for job in as_completed(jobs):
                bar.update(job.result())
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # running tasks finish: files stay whole
            raise


def _grid_points(layout: SequenceLayout, todo: dict[str, list[int]], opts: BlendWeightOptions) -> int:
    """Grid points of one frame (of the first hand with work), to size the work."""
    hand = next(h for h, frames in todo.items() if frames)
    vertices = layout.read_vertices(layout.vertices(hand, todo[hand][0])).astype(np.float64)
    return int(np.prod(skinning.grid_shape(vertices, opts.voxel_size, opts.padding)))


# ---------------------------------------------------------------------------------------------
# The stage


@dataclass
class _Plan:
    hands: tuple[str, ...]
    frames: list[int]
    recipe: dict
    inputs: dict
    digests: dict[str, dict[str, str | None]]
    todo: dict[str, list[int]]
    tbw: dict[str, bool]  # compute the canonical grid (options or model changed, or it is missing)
    reason: str | None
    stale_files: list


def _plan(sel: SequenceSelector, opts: BlendWeightOptions) -> _Plan:
    """What to compute: everything when the grid options changed; a hand's every frame when its
    model changed or it is new; else the frames whose params or vertices changed or lack grids."""
    layout = sel.layout
    frames = layout.read_frames()
    hands = processed_hands(sel)
    models = {}
    for hand in hands:
        files = mano_files(sel.mano_dir, (hand,))
        for path in files:
            if not path.is_file():
                load_mano_model(path.parent, "left" if "LEFT" in path.name else "right")  # the clear error
        models[hand] = {p.name: file_sha256(p) for p in files}
    recipe = {"options": options_recipe(opts), "models": models}
    inputs = {"mano": {hand: str(Path(sel.mano_dir).resolve() / model_filename(hand)) for hand in hands}}
    manifest = Manifest.read(layout.root)
    global_reason = "--overwrite" if sel.overwrite else manifest.stale_reason(STAGE, {"options": recipe["options"]})
    old_recipe = manifest.recipe(STAGE) or {}
    old_models = old_recipe.get("models", {}) if isinstance(old_recipe.get("models"), dict) else {}
    old_frames = (manifest.stage(STAGE) or {}).get("frames", {})
    digests, todo, tbw, reasons = {}, {}, {}, []
    for hand in hands:
        digests[hand] = frame_input_digests(layout, hand, frames)
        missing = [f for f in frames if digests[hand][str(f)] is None]
        if missing:
            layout.read_params(layout.params(hand, missing[0]))  # the clear error naming the file
            layout.read_vertices(layout.vertices(hand, missing[0]))
        hand_reason = global_reason
        if not hand_reason and old_models.get(hand) != models[hand]:
            hand_reason = f"{hand}: " + ("new hand" if hand not in old_models else "MANO model changed")
            reasons.append(hand_reason)
        have_bw, have_bs = layout.existing_frame_files("bweights", hand), layout.existing_frame_files("bs", hand)
        old = old_frames.get(hand, {}) if isinstance(old_frames, dict) and not hand_reason else {}
        todo[hand] = [f for f in frames if hand_reason or old.get(str(f)) != digests[hand][str(f)]
                      or f not in have_bw or f not in have_bs]
        tbw[hand] = bool(hand_reason) or not layout.lbs_file(hand, "tbw").is_file()
        shared_missing = [n for n in LBS_SHARED_FILES if not layout.lbs_file(hand, n).is_file()]
        if not hand_reason and todo[hand]:
            reasons.append(f"{hand}: {len(todo[hand])} frame(s) new or changed")
        elif not hand_reason and shared_missing:
            reasons.append(f"{hand}: lbs/{hand}/{shared_missing[0]}.npy missing")
    stale_files = []
    keep = set(frames)
    for hand in HANDS:
        for kind in ("bweights", "bs"):
            stale_files += [p for f, p in layout.existing_frame_files(kind, hand).items() if hand not in hands or f not in keep]
        if hand not in hands:
            stale_files += [layout.lbs_file(hand, n) for n in LBS_SHARED_FILES if layout.lbs_file(hand, n).exists()]
    if stale_files and not global_reason:
        reasons.append(f"{len(stale_files)} grid file(s) of frames or hands no longer processed")
    reason = global_reason or ("; ".join(reasons) if reasons else None)
    return _Plan(hands, frames, recipe, inputs, digests, todo, tbw, reason, stale_files)


def _check_disk_space(layout: SequenceLayout, plan: _Plan, opts: BlendWeightOptions) -> None:
    needed = 0
    for hand, frames in plan.todo.items():
        if frames:
            vertices = layout.read_vertices(layout.vertices(hand, frames[0])).astype(np.float64)
            points = int(np.prod(skinning.grid_shape(vertices, opts.voxel_size, opts.padding)))
            needed += len(frames) * points * 4 * (skinning.WEIGHT_CHANNELS + skinning.BLEND_SHAPE_CHANNELS) * 1.1
    check_free_space(layout.root, needed, f"the grids of {sum(len(f) for f in plan.todo.values())} frames")


def run(sel: SequenceSelector, opts: BlendWeightOptions | None = None, progress: bool = True) -> BlendWeightResult:
    opts = opts or BlendWeightOptions()
    start, started = time.perf_counter(), time.time()
    layout = sel.layout
    result = BlendWeightResult(layout=layout)
    plan = _plan(sel, opts)
    if plan.reason is None:
        result.up_to_date = True
        result.skipped = {h: len(plan.frames) for h in plan.hands}
        result.seconds = time.perf_counter() - start
        return result
    with sequence_lock(layout.root):
        plan = _plan(sel, opts)  # again: another run may have done it while we waited
        if plan.reason is None:
            result.up_to_date = True
            result.skipped = {h: len(plan.frames) for h in plan.hands}
            return result
        result.reason = plan.reason
        _check_disk_space(layout, plan, opts)
        manifest = Manifest.read(layout.root)
        manifest.drop(STAGE)
        _run(sel, opts, plan, result, progress)
        manifest.record(STAGE, {**stage_record(plan.recipe, plan.inputs, {
            "hands": list(plan.hands), "frames": len(plan.frames),
            "grid_shape": {h: list(s) for h, s in result.grid_shape.items()}}, started), "frames": plan.digests})
    result.seconds = time.perf_counter() - start
    return result


def _run(sel: SequenceSelector, opts: BlendWeightOptions, plan: _Plan, result: BlendWeightResult, progress: bool) -> None:
    from tqdm import tqdm

    layout = sel.layout
    models = {hand: load_mano_model(sel.mano_dir, hand) for hand in plan.hands}
    for hand in plan.hands:
        result.skipped[hand] = len(plan.frames) - len(plan.todo[hand])
        result.written[hand] = len(plan.todo[hand])
    todo = {hand: frames for hand, frames in plan.todo.items() if frames}
    if todo:
        with tqdm(total=sum(len(f) for f in todo.values()), desc=f"{sel.seq} grids", unit="frame",
                  disable=not progress, leave=False) as bar:
            _compute(models, layout, todo, opts, bar)
    for hand, model in models.items():
        # the small shared files follow the first kept frame's shape: written (if changed) on every run
        _, first = _read_frames(layout, hand, plan.frames[:1], model.num_vertices)
        shared = {
            "faces": model.faces.astype(np.int64), "parents": model.parents.astype(np.int64),
            "weights": model.weights.astype(np.float32),
            "joints": shaped_joints(model, first["shapes"][:1])[0].astype(np.float32),
            "tvertices": model.v_template.astype(np.float32),
        }
        if plan.tbw[hand]:
            shared["tbw"] = skinning.canonical_grid(model, opts.voxel_size, opts.padding)
        result.grid_shape[hand] = skinning.grid_shape(model.v_template, opts.voxel_size, opts.padding) + (
            skinning.WEIGHT_CHANNELS,)
        for name, array in shared.items():
            save_npy(layout.lbs_file(hand, name), array)
    result.removed = remove_files(plan.stale_files, layout.root)


def main(args) -> int:
    """prepare-blend-weights / prepare_blend_weights.py"""
    result = run(selector_from_args(args), from_args(BlendWeightOptions, args), progress=not args.quiet)
    print(result.summary())
    return 0
