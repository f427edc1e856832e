"""The prepare_blend_weights stage: skinning-weight and blend-shape grids of a processed sequence.

Per requested hand, into lbs/<hand>/ (metres, float32 grids of shape X x Y x Z x C):
    faces, parents, weights, joints, tvertices    the model's topology, skinning and rest pose
    tbw                  canonical grid around tvertices: 16 closest-surface-point weights + distance
    bweights/<frame>     grid around the frame's pose-space vertices: 16 weights of the nearest
                         vertex (closest surface point with --surface-weights) + distance
    bs/<frame>           grid around the frame's unposed vertices: shape + pose blend-shape offsets
                         (3 channels) interpolated at the closest surface point
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np

from . import skinning
from .annots import SequenceSelector
from .errors import InputError
from .fileio import save_npy, sequence_lock
from .layout import SequenceLayout
from .mano import ManoModel, axis_angle_to_matrix, load_mano_model

# Frames are processed in batches holding at most this many grid points (bounds memory at small voxels).
MAX_BATCH_POINTS = 2_000_000
MAX_BATCH_FRAMES = 16  # small batches let the writes of one overlap the queries of the next
# Below this many grid points in total, worker processes cost more than they save.
PARALLEL_MIN_POINTS = 1_000_000


@dataclass
class BlendWeightOptions:
    voxel_size: float = 0.025
    padding: float = 0.05
    surface_weights: bool = False
    workers: int = 0  # processes for the grid queries; 0: one per core

    def validate(self) -> None:
        if not np.isfinite(self.voxel_size) or self.voxel_size <= 0:
            raise InputError(f"--voxel-size must be a positive length in metres, got {self.voxel_size}")
        if not np.isfinite(self.padding) or self.padding < 0:
            raise InputError(f"--padding must be a non-negative length in metres, got {self.padding}")


@dataclass
class BlendWeightResult:
    layout: SequenceLayout
    written: dict[str, int] = field(default_factory=dict)   # hand -> frames computed
    skipped: dict[str, int] = field(default_factory=dict)   # hand -> frames already complete
    grid_shape: dict[str, tuple] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"{self.layout.root / 'lbs'}"]
        for hand in self.written:
            lines.append(f"  {hand}: {self.written[hand]} frames written, {self.skipped[hand]} already complete"
                         + (f"; canonical grid {self.grid_shape[hand]}" if hand in self.grid_shape else ""))
        total = sum(self.written.values())
        lines.append(f"  {total} frame grids in {self.seconds:.2f} s" + (f" ({total / self.seconds:.0f} frames/s)" if total else ""))
        return "\n".join(lines)


def pose_space_vertices(vertices: np.ndarray, Rh: np.ndarray, Th: np.ndarray) -> np.ndarray:
    """World vertices NxVx3 (m) -> pose space (global rotation and translation removed):
    (vertices - Th) @ Rodrigues(Rh), with Rh Nx3 and Th Nx3."""
    return np.einsum("nvi,nij->nvj", vertices - Th[:, None, :], axis_angle_to_matrix(Rh))


def shaped_joints(model: ManoModel, shapes: np.ndarray) -> np.ndarray:
    """shapes Nx10 -> Nx16x3 rest joints of the shaped template (m)."""
    shaped = model.v_template + np.einsum("vck,nk->nvc", model.shapedirs[..., : shapes.shape[1]], shapes)
    return np.einsum("jv,nvc->njc", model.J_regressor, shaped)


def unposed_vertices(model: ManoModel, posed: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """Pose-space vertices NxVx3 -> unposed vertices NxVx3 (template + shape and pose blend shapes),
    by inverse linear blend skinning with the frames' poses and shaped rest joints."""
    transforms = skinning.skinning_transforms(params["poses"], shaped_joints(model, params["shapes"]), model.parents)
    return skinning.inverse_skinning(posed, transforms, model.weights)


def frame_grids(model: ManoModel, posed: np.ndarray, unposed: np.ndarray, opts: BlendWeightOptions
                ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """bweights and bs grids of N frames.

    posed NxVx3 pose-space vertices, unposed NxVx3 (m)
    -> ([XxYxZx17 float32] per frame, [X'xY'xZ'x3 float32] per frame).
    """
    grids = [skinning.grid_points(skinning.grid_axes(p, opts.voxel_size, opts.padding)) for p in posed]
    flat = [g.reshape(-1, 3) for g in grids]
    if opts.surface_weights:
        closest = skinning.closest_surface(flat, list(posed), model.faces)
        bweights = [skinning.surface_weight_grid(g, c, model.faces, model.weights) for g, c in zip(grids, closest)]
    else:
        nearest = skinning.nearest_vertex(flat, list(posed))
        bweights = [skinning.vertex_weight_grid(g, d, i, model.weights) for g, (d, i) in zip(grids, nearest)]
    offsets = unposed - model.v_template
    grids = [skinning.grid_points(skinning.grid_axes(u, opts.voxel_size, opts.padding)) for u in unposed]
    closest = skinning.closest_surface([g.reshape(-1, 3) for g in grids], list(unposed), model.faces)
    bs = [c.interpolate(model.faces, o).reshape(g.shape).astype(np.float32) for g, c, o in zip(grids, closest, offsets)]
    return bweights, bs


def _write_frame_grids(model: ManoModel, layout: SequenceLayout, hand: str, frames: list[int], posed: np.ndarray,
                       unposed: np.ndarray, opts: BlendWeightOptions) -> int:
    """Compute and write the grids of `frames` in batches (runs in a worker process)."""
    points = int(np.prod([len(a) for a in skinning.grid_axes(posed[0], opts.voxel_size, opts.padding)]))
    batch = max(1, min(MAX_BATCH_FRAMES, MAX_BATCH_POINTS // points))
    with ThreadPoolExecutor(max_workers=1) as writer:  # writes overlap the next batch's queries
        pending = []
        for i in range(0, len(frames), batch):
            sl = slice(i, i + batch)
            bweights, bs = frame_grids(model, posed[sl], unposed[sl], opts)
            for f, bw, b in zip(frames[sl], bweights, bs):
                pending.append(writer.submit(save_npy, layout.bweights(hand, f), bw))
                pending.append(writer.submit(save_npy, layout.bs(hand, f), b))
        for future in pending:
            future.result()
    return len(frames)


def canonical_grid(model: ManoModel, opts: BlendWeightOptions) -> np.ndarray:
    """tbw: XxYxZx17 float32 grid around v_template (closest-surface-point weights + distance)."""
    grid = skinning.grid_points(skinning.grid_axes(model.v_template, opts.voxel_size, opts.padding))
    closest = skinning.closest_surface([grid.reshape(-1, 3)], [model.v_template], model.faces)[0]
    return skinning.surface_weight_grid(grid, closest, model.faces, model.weights)


def _read_frames(layout: SequenceLayout, hand: str, frames: list[int], num_vertices: int):
    vertices = np.stack([layout.read_vertices(layout.vertices(hand, f), num_vertices) for f in frames]).astype(np.float64)
    params = [layout.read_params(layout.params(hand, f)) for f in frames]
    stacked = {k: np.concatenate([p[k] for p in params]).astype(np.float64) for k in ("poses", "Rh", "Th", "shapes")}
    return vertices, stacked


def run(sel: SequenceSelector, opts: BlendWeightOptions | None = None, progress: bool = True) -> BlendWeightResult:
    opts = opts or BlendWeightOptions()
    opts.validate()
    with sequence_lock(sel.layout.root):
        return _run(sel, opts, progress)


def _run(sel: SequenceSelector, opts: BlendWeightOptions, progress: bool) -> BlendWeightResult:
    from tqdm import tqdm

    start = time.perf_counter()
    layout = sel.layout
    frames = layout.read_frames()
    result = BlendWeightResult(layout=layout)
    workers = max(1, opts.workers or os.cpu_count() or 1)
    for hand in sel.hands:
        model = load_mano_model(sel.mano_dir, hand)
        todo = frames if sel.overwrite else [f for f in frames if not (layout.bweights(hand, f).is_file()
                                                                        and layout.bs(hand, f).is_file())]
        result.skipped[hand] = len(frames) - len(todo)
        result.written[hand] = len(todo)
        _, first = _read_frames(layout, hand, frames[:1], model.num_vertices)
        if todo:
            vertices, params = _read_frames(layout, hand, todo, model.num_vertices)
            posed = pose_space_vertices(vertices, params["Rh"], params["Th"])
            unposed = unposed_vertices(model, posed, params)  # torch work stays in this process
            # Forking pays off only for large grids: the two vCPUs of the target machine scale poorly.
            points = len(todo) * int(np.prod([len(a) for a in skinning.grid_axes(posed[0], opts.voxel_size, opts.padding)]))
            splits = min(workers, len(todo)) if points >= PARALLEL_MIN_POINTS else 1
            chunks = [c for c in np.array_split(np.arange(len(todo)), splits) if len(c)]
            bar = tqdm(total=len(todo), desc=f"{sel.seq} {hand} grids", unit="frame", disable=not progress, leave=False)
            if len(chunks) == 1:
                bar.update(_write_frame_grids(model, layout, hand, todo, posed, unposed, opts))
            else:
                # fork: the children inherit the imports and only run numpy, scipy and pcu
                with ProcessPoolExecutor(len(chunks), mp_context=multiprocessing.get_context("fork")) as pool:
                    jobs = [pool.submit(_write_frame_grids, model, layout, hand, [todo[i] for i in c], posed[c],
                                        unposed[c], opts) for c in chunks]
                    for job in as_completed(jobs):
                        bar.update(job.result())
            bar.close()
        shared = {
            "faces": model.faces.astype(np.int64), "parents": model.parents.astype(np.int64),
            "weights": model.weights.astype(np.float32),
            "joints": shaped_joints(model, first["shapes"][:1])[0].astype(np.float32),
            "tvertices": model.v_template.astype(np.float32),
        }
        for name, array in shared.items():
            if sel.overwrite or not layout.lbs_file(hand, name).is_file():
                save_npy(layout.lbs_file(hand, name), array)
        if sel.overwrite or not layout.lbs_file(hand, "tbw").is_file():
            tbw = canonical_grid(model, opts)
            result.grid_shape[hand] = tbw.shape
            save_npy(layout.lbs_file(hand, "tbw"), tbw)
    result.seconds = time.perf_counter() - start
    return result
