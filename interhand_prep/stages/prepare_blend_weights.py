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
no longer processed are removed. Each frame's grids go into the run's journal when written
(base.py), so a rerun after a stop computes only the rest.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core import parts, skinning
from ..core.errors import interrupts_ignored
from ..core.fileio import remove_files, save_npy
from ..core.locking import die_with_parent, usable_cpus
from ..core.layout import LBS_SHARED_FILES, SequenceLayout, write_grid
from ..core.manifest import file_digest, file_sha256
from ..core.mano import ManoModel, load_mano_model, model_filename
from ..core.mano_forward import shaped_joints
from ..core.constants import HANDS
from ..core.options import BlendWeightOptions, from_args, recipe as options_recipe
from ..core.selection import SequenceSelector, selector_from_args
from ..core.processed import mano_files, processed_hands
from .base import Plan, Previous, Stage, StageResult, join_reasons, run_stage, unit_digest

# Below this many grid points in total (about 50 frames at the default voxel), forking workers
# costs more than it saves.
PARALLEL_MIN_POINTS = 50_000
FRAMES_PER_TASK = 8  # tasks of ~50 ms: Ctrl-C stops within a second, progress is smooth


@dataclass
class BlendWeightResult(StageResult):
    written: dict[str, int] = field(default_factory=dict)   # hand -> frames computed
    skipped: dict[str, int] = field(default_factory=dict)   # hand -> frames up to date
    removed: int = 0
    grid_shape: dict[str, tuple] = field(default_factory=dict)

    def summary(self) -> str:
        if self.up_to_date:
            frames = ", ".join(f"{h} {n} frames" for h, n in self.skipped.items())
            return f"{self.layout.root / 'lbs'}: grids up to date ({frames}); nothing to do"
        lines = [f"{self.layout.root / 'lbs'}" + (f"  ({self.reason})" if self.reason else "")]
        for hand in self.written:
            lines.append(f"  {hand}: {self.written[hand]} frames computed, {self.skipped[hand]} up to date"
                         + (f"; canonical grid {self.grid_shape[hand]}" if hand in self.grid_shape else ""))
        total = sum(self.written.values())
        if self.resumed:
            lines.append(f"  {self.resumed} frame grids were finished by an interrupted run")
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


def _grids_task(hand: str, frames: list[int]) -> tuple[str, list[int]]:
    s = _worker_state
    frame_grids_of(s["models"][hand], s["layout"], hand, frames, s["opts"])
    return hand, frames


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
             finished) -> None:
    """Compute and write the grids of `todo` {hand: frames}; `finished(hand, frames)` after each task."""
    tasks = [(hand, frames[s:s + FRAMES_PER_TASK]) for hand, frames in todo.items()
             for s in range(0, len(frames), FRAMES_PER_TASK)]
    points = sum(len(frames) for frames in todo.values()) * _grid_points(layout, todo, opts)
    workers = min(opts.lbs_workers or usable_cpus(), len(tasks))
    if points < PARALLEL_MIN_POINTS or workers < 2:
        for hand, frames in tasks:
            frame_grids_of(models[hand], layout, hand, frames, opts)
            finished(hand, frames)
        return
    # fork: the workers inherit the imports, the models and the sequence lock's descriptor (the
    # lock lasts until the last of them is gone); they die with this process
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(os.getpid(), models, str(layout.root), opts)) as pool:
        jobs = [pool.submit(_grids_task, hand, frames) for hand, frames in tasks]
        reported = set()
        try:
            for job in as_completed(jobs):
                reported.add(job)
                finished(*job.result())
        except BaseException:
            with interrupts_ignored():
                pool.shutdown(wait=True, cancel_futures=True)  # running tasks finish: files stay whole
                for job in jobs:  # and go into the journal
                    if job not in reported and job.done() and not job.cancelled() and job.exception() is None:
                        finished(*job.result())
            raise


def _grid_points(layout: SequenceLayout, todo: dict[str, list[int]], opts: BlendWeightOptions) -> int:
    """Grid points of one frame (of the first hand with work), to size the work."""
    hand = next(h for h, frames in todo.items() if frames)
    vertices = layout.read_vertices(layout.vertices(hand, todo[hand][0])).astype(np.float64)
    return int(np.prod(skinning.grid_shape(vertices, opts.voxel_size, opts.padding)))


# ---------------------------------------------------------------------------------------------
# The stage


def frame_unit(hand: str, frame: int) -> str:
    """A frame's grids (bweights and bs) in the journal."""
    return f"{hand}:{int(frame)}"


@dataclass
class _Grids:
    """The stage's own part of a plan."""

    hands: tuple[str, ...]
    frames: list[int]
    todo: dict[str, list[int]]
    tbw: dict[str, bool]  # compute the canonical grid (options or model changed, or it is missing)


class PrepareBlendWeights(Stage):
    def plan(self, sel: SequenceSelector, opts: BlendWeightOptions, previous: Previous) -> Plan:
        """Everything when the grid options changed; a hand's every frame when its model changed or
        it is new; else the frames whose params or vertices changed or lack grids."""
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
        global_reason = "--overwrite" if sel.overwrite else previous.manifest.stale_reason(self.name, {"options": recipe["options"]})
        old_recipe = previous.record.get("recipe") or {}
        old_models = old_recipe.get("models", {}) if isinstance(old_recipe.get("models"), dict) else {}
        old_frames = previous.record.get("frames", {})
        digests, todo, units, tbw, reasons = {}, {}, {}, {}, []
        resumed = 0
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
            hand_recipe = {"options": recipe["options"], "models": models[hand]}
            todo[hand] = []
            for f in frames:
                on_disk = f in have_bw and f in have_bs
                unit, unit_hash = frame_unit(hand, f), unit_digest(hand_recipe, digests[hand][str(f)] or "")
                fresh, by_journal = previous.up_to_date(unit, unit_hash, not hand_reason and old.get(str(f)) == digests[hand][str(f)])
                if fresh and on_disk:
                    resumed += by_journal
                    continue
                todo[hand].append(f)
                units[unit] = unit_hash
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
        total = len(frames) * len(hands)
        reason = join_reasons(global_reason, "; ".join(reasons), previous.interruption_note(resumed, total))
        return Plan(reason, recipe, inputs, state={"frames": digests}, todo=units, total=total, resumed=resumed,
                    needed_bytes=_needed_bytes(layout, todo, opts), needed_for=f"the grids of {len(units)} frames",
                    stale_files=stale_files,
                    data=_Grids(hands, frames, todo, tbw))

    def new_result(self, sel: SequenceSelector, opts: BlendWeightOptions, plan: Plan) -> BlendWeightResult:
        data: _Grids = plan.data
        result = BlendWeightResult(layout=sel.layout)
        result.skipped = {h: len(data.frames) - len(data.todo[h]) for h in data.hands}
        result.written = {h: len(data.todo[h]) for h in data.hands}
        return result

    def prepare(self, sel: SequenceSelector, opts: BlendWeightOptions, plan: Plan, result: BlendWeightResult):
        return {hand: load_mano_model(sel.mano_dir, hand) for hand in plan.data.hands}

    def write(self, sel, opts: BlendWeightOptions, plan: Plan, models, result: BlendWeightResult, done, lock,
              progress: bool) -> None:
        _run(sel, opts, plan.data, models, result, progress, done)
        result.removed = remove_files(plan.stale_files, sel.layout.root)

    def record_result(self, plan: Plan, result: BlendWeightResult) -> dict:
        return {"hands": list(plan.data.hands), "frames": len(plan.data.frames), "frames_resumed": result.resumed,
                "grid_shape": {h: list(s) for h, s in result.grid_shape.items()}}


STAGE = PrepareBlendWeights()


def _needed_bytes(layout: SequenceLayout, todo: dict[str, list[int]], opts: BlendWeightOptions) -> float:
    needed = 0.0
    for hand, frames in todo.items():
        if frames:
            vertices = layout.read_vertices(layout.vertices(hand, frames[0])).astype(np.float64)
            points = int(np.prod(skinning.grid_shape(vertices, opts.voxel_size, opts.padding)))
            needed += len(frames) * points * 4 * (skinning.WEIGHT_CHANNELS + skinning.BLEND_SHAPE_CHANNELS) * 1.1
    return needed


def run(sel: SequenceSelector, opts: BlendWeightOptions | None = None, progress: bool = True) -> BlendWeightResult:
    return run_stage(STAGE, sel, opts or BlendWeightOptions(), progress)


def _run(sel: SequenceSelector, opts: BlendWeightOptions, plan: _Grids, models: dict[str, ManoModel],
         result: BlendWeightResult, progress: bool, done) -> None:
    from tqdm import tqdm

    layout = sel.layout
    todo = {hand: frames for hand, frames in plan.todo.items() if frames}
    if todo:
        with tqdm(total=sum(len(f) for f in todo.values()), desc=f"{sel.seq} grids", unit="frame",
                  disable=not progress, leave=False) as bar:
            def finished(hand: str, frames: list[int]) -> None:
                done([frame_unit(hand, f) for f in frames])
                bar.update(len(frames))

            _compute(models, layout, todo, opts, finished)
    for hand, model in models.items():
        # the small shared files follow the first kept frame's shape: written (if changed) on every run
        _, first = _read_frames(layout, hand, plan.frames[:1], model.num_vertices)
        shared = {
            "faces": model.faces.astype(np.int64), "parents": model.parents.astype(np.int64),
            "weights": model.weights.astype(np.float32),
            "joints": shaped_joints(model, first["shapes"][:1])[0].astype(np.float32),
            "tvertices": model.v_template.astype(np.float32),
            "parts": parts.vertex_parts(model.weights),  # (V,) int64: each vertex's joint
        }
        if plan.tbw[hand]:
            shared["tbw"] = skinning.canonical_grid(model, opts.voxel_size, opts.padding)
        result.grid_shape[hand] = skinning.grid_shape(model.v_template, opts.voxel_size, opts.padding) + (
            skinning.WEIGHT_CHANNELS,)
        for name, array in shared.items():
            save_npy(layout.lbs_file(hand, name), array)


def main(args) -> int:
    """prepare-blend-weights / prepare_blend_weights.py"""
    result = run(selector_from_args(args), from_args(BlendWeightOptions, args), progress=not args.quiet)
    print(result.summary())
    return 0
