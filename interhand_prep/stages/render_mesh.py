"""The render_mesh stage: a hand mask and a depth map for every kept camera and kept frame.

Every hand that has MANO in a frame is drawn, also when --hand-type asks for one hand only, so an
occluding hand is never labelled as the other hand or as background. Vertices come from
vertices/<hand>/<frame>.npy, or, for a hand that get_annots did not process, from MANO directly.

Reruns: the recipe (render options, the models' faces and part tables) decides whether every view
is redone; a digest of each frame's meshes and of each camera decides which views are. Masks and
depth maps of views no longer wanted (frames dropped, cameras filtered, another depth format) are
removed. --parts is not in the recipe: turning it on renders the views that lack a part image
(all of them), turning it off removes parts/ and parts.json and renders nothing.
Work is spread over worker processes in small tasks (a few frames each): Ctrl-C stops within a
second or two, keeping every finished file, and the workers die with the main process. Each
finished view goes into the run's journal (base.py), so a rerun after a stop renders only the rest.

Every view's labels are checked on the CPU before it is written (`gl_renderer.label_problem`): a
view that fails is rendered once more in a fresh scene, and a second failure stops the stage, so a
mask with a hand under the wrong label is never written silently.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..core import gl_platform, gl_renderer, parts
from ..core.errors import interrupts_ignored
from ..core.fileio import remove_files, write_text
from ..core.locking import die_with_parent, usable_cpus
from ..core.layout import SequenceLayout, render_formats
from ..core.manifest import digest
from ..core.mano import load_mano_model
from ..core.constants import HANDS
from ..core.options import RenderOptions, from_args, recipe as options_recipe
from ..core.processed import camera_digest, frame_digest, frame_meshes, processed_hands, view_cameras
from ..core.selection import SequenceSelector, selector_from_args
from .base import Plan, Previous, Stage, StageResult, collect_tasks, plan_views, run_stage, view_unit

log = logging.getLogger(__name__)
FRAMES_PER_TASK = 2
# Below this many views one process renders (writes in threads beside it): starting a worker
# (importing pyrender, creating a context) costs about as much as rendering a thousand views.
PARALLEL_MIN_VIEWS = 1000


@dataclass
class RenderResult(StageResult):
    backend: str = ""
    rendered: int = 0
    skipped: int = 0
    removed: int = 0
    cameras: int = 0
    frames: int = 0
    workers: int = 1
    steady_views: int = 0        # views rendered after the first task finished, and the time they took:
    steady_seconds: float = 0.0  # the rate after start-up (imports, GL contexts) and planning
    rechecked: int = 0           # views rendered again after a failed label check
    parts: bool = False          # part labels written too (--parts)
    hands_drawn: dict[str, int] = field(default_factory=dict)

    @property
    def kinds(self) -> str:
        return "masks, part labels and depth" if self.parts else "masks and depth"

    def summary(self) -> str:
        if self.up_to_date:
            return (f"{self.layout.root}: {self.kinds} up to date ({self.cameras} cameras x {self.frames} frames); "
                    "nothing to do")
        rate = (f", rendering {self.steady_views / self.steady_seconds:.0f} views/s after start-up"
                if self.steady_views and self.steady_seconds else "")
        hands = ", ".join(f"{h} in {n} frames" for h, n in self.hands_drawn.items())
        return (f"{self.layout.root}: {self.kinds} of {self.cameras} cameras x {self.frames} frames"
                + (f"  ({self.reason})" if self.reason else "") + "\n"
                f"  {self.rendered} views rendered, {self.skipped} up to date"
                + (f" ({self.resumed} of them finished by an interrupted run)" if self.resumed else "")
                + f", {self.removed} files removed; "
                f"{self.backend or 'no GL needed'}, {self.workers} worker(s); {self.seconds:.2f} s{rate}\n"
                f"  hands drawn: {hands or 'none'}"
                + (f"\n  {self.rechecked} view(s) rendered again after a failed label check" if self.rechecked else ""))


# ---------------------------------------------------------------------------------------------
# Rendering work (in this process, or in spawned workers)

_worker: dict = {}


def _init_worker(parent: int, lock, cameras, faces, face_parts, layout_root: str, depth_format: str) -> None:
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the pool on Ctrl-C
    _worker.update(lock=lock, cameras=cameras, faces=faces, face_parts=face_parts, layout=SequenceLayout(layout_root),
                   depth_format=depth_format, renderer=None)


def _close_worker_renderer() -> None:
    if _worker.get("renderer") is not None:
        _worker["renderer"].close()
        _worker["renderer"] = None


def _render_task(size: tuple[int, int], frames: list[int], meshes: dict, views: dict[int, list[str]]) -> tuple[list[str], int]:
    w = _worker
    if w["renderer"] is None:
        from multiprocessing.util import Finalize

        w["renderer"] = gl_renderer.HandViewRenderer(w["cameras"], w["face_parts"])
        Finalize(None, _close_worker_renderer, exitpriority=10)  # the GL context goes with the worker
    return render_views(w["renderer"], w["layout"], size, frames, meshes, views, w["faces"], w["depth_format"])


def render_views(renderer: gl_renderer.HandViewRenderer, layout: SequenceLayout, size: tuple[int, int],
                 frames: list[int], meshes: dict, views: dict[int, list[str]], faces: dict, depth_format: str,
                 done: list[str] | None = None) -> tuple[list[str], int]:
    """Render, check and write the views {frame: [camera ids]} of one image size (with part labels
    when the renderer draws them); writes overlap rendering. -> (the views written, as journal
    units; how many needed a second render).

    `done` (optional) receives each view as its files are complete, also when a Ctrl-C stops the
    loop: the views already handed to the writers are finished first."""
    done = [] if done is None else done
    rechecked = 0
    pending = []
    with_parts = renderer.face_parts is not None
    draw = renderer.render_parts if with_parts else (lambda cam: (None, *renderer.render(cam)))

    def collect(keep: int) -> None:
        while len(pending) > keep:  # bound the views held in memory for writing
            unit, future = pending.pop(0)
            future.result()
            done.append(unit)

    with ThreadPoolExecutor(max_workers=2) as writer:
        try:
            for frame in frames:
                hands = {hand: (v, faces[hand]) for hand, v in meshes[frame].items()}
                renderer.set_hands(size, hands)
                for cam in views[frame]:
                    part_labels, mask, depth = draw(cam)
                    problem = renderer.label_problem(cam, mask, depth)
                    if problem:
                        rechecked += 1
                        log.warning("cam%s frame %d: %s; rendering it again", cam, frame, problem)
                        renderer.set_hands(size, hands)  # new scene nodes and buffers
                        part_labels, mask, depth = draw(cam)
                        problem = renderer.label_problem(cam, mask, depth)
                        if problem:
                            raise RuntimeError(f"{layout.mask(cam, frame)}: the render gives wrong hand labels "
                                               f"twice ({problem}); nothing was written for this view")
                    outputs = {"mask": (mask, "png"), "depth": (depth, depth_format), "parts": (part_labels, "png")}
                    outputs = {kind: outputs[kind] for kind in render_formats(depth_format, with_parts)}
                    pending.append((view_unit(frame, cam), writer.submit(layout.write_view, cam, frame, outputs)))
                collect(64)
            collect(0)
        except BaseException:
            with interrupts_ignored():
                for unit, future in pending:
                    if future.exception() is None:  # waits for the write
                        done.append(unit)
            raise
    return done, rechecked


def _tasks(cameras: list[gl_renderer.ViewCamera], todo: dict[int, set[str]]) -> list[tuple]:
    """(size, frames, {frame: cams}) in chunks of a few frames, one image size per task, sizes in turn."""
    sizes: dict[tuple[int, int], list[str]] = {}
    for cam in cameras:
        sizes.setdefault((cam.width, cam.height), []).append(cam.cam_id)
    tasks = []
    for size, cams in sizes.items():
        frames = [f for f in sorted(todo) if any(c in todo[f] for c in cams)]
        for start in range(0, len(frames), FRAMES_PER_TASK):
            chunk = frames[start:start + FRAMES_PER_TASK]
            tasks.append((size, chunk, {f: [c for c in cams if c in todo[f]] for f in chunk}))
    return tasks


# ---------------------------------------------------------------------------------------------
# The stage


@dataclass
class _Views:
    """The stage's own part of a plan."""

    frames: list[int]
    cameras: list[gl_renderer.ViewCamera]
    meshes: dict
    faces: dict
    face_parts: dict | None     # {hand: (F,) MANO joint of each face} with --parts, else None
    todo: dict[int, set[str]]   # {frame: camera ids} to render


class RenderMesh(Stage):
    def check(self, sel: SequenceSelector, opts: RenderOptions) -> None:
        if not sel.layout.frames_txt.is_file():
            sel.layout.read_frames()  # the clear "run get_annots.py first" error, before any lock file
        super().check(sel, opts)

    def plan(self, sel: SequenceSelector, opts: RenderOptions, previous: Previous) -> Plan:
        layout = sel.layout
        frames = layout.read_frames()
        hands = processed_hands(sel)
        cameras = view_cameras(sel, layout, opts.all_cameras)
        meshes, faces = frame_meshes(sel, layout, frames, hands)
        face_parts = {h: parts.face_parts(faces[h], parts.vertex_parts(load_mano_model(sel.mano_dir, h).weights))
                      for h in faces}
        # --all-cameras is not compared: the camera digests below decide which cameras' views are due;
        # nor is --parts: the part files present or missing decide (the module docstring)
        recipe = {"options": {k: v for k, v in options_recipe(opts).items() if k not in ("all_cameras", "parts")},
                  "faces": {h: digest(np.ascontiguousarray(f, dtype=np.int64).tobytes()) for h, f in sorted(faces.items())},
                  "parts": {h: digest(p.tobytes()) for h, p in sorted(face_parts.items())}}
        frame_digests = {str(f): frame_digest(meshes[f]) for f in frames}
        camera_digests = {c.cam_id: camera_digest(c) for c in cameras}
        global_reason = "--overwrite" if sel.overwrite else previous.manifest.stale_reason(self.name, recipe)
        formats = render_formats(opts.depth_format, opts.parts)
        views = plan_views(self.name, layout, previous, recipe, global_reason, frames, cameras, frame_digests,
                           camera_digests, formats)
        stale_files = views.stale_files + ([layout.parts_json] if not opts.parts and layout.parts_json.exists() else [])
        todo_views: dict[int, set[str]] = {}
        for unit in views.todo:
            frame, cam = unit.split(":")
            todo_views.setdefault(int(frame), set()).add(cam)
        return Plan(views.reason, recipe, inputs={"all_cameras": opts.all_cameras, "parts": opts.parts, "backend_used": None},
                    state={"frames": frame_digests, "cameras": camera_digests}, todo=views.todo, total=views.total,
                    resumed=views.resumed, needed_bytes=views.needed_bytes,
                    needed_for=f"{len(views.todo)} masks and depth maps", stale_files=stale_files,
                    data=_Views(frames, cameras, meshes, faces, face_parts if opts.parts else None, todo_views))

    def new_result(self, sel: SequenceSelector, opts: RenderOptions, plan: Plan) -> RenderResult:
        data: _Views = plan.data
        result = RenderResult(layout=sel.layout, frames=len(data.frames), cameras=len(data.cameras), parts=opts.parts)
        result.hands_drawn = {h: sum(h in m for m in data.meshes.values()) for h in HANDS}
        result.skipped = plan.total - len(plan.todo)
        return result

    def prepare(self, sel: SequenceSelector, opts: RenderOptions, plan: Plan, result: RenderResult):
        if plan.todo:
            choice = gl_platform.select_platform(opts.backend)  # may refuse: nothing is written yet
            result.backend = plan.inputs["backend_used"] = choice.platform
            log.info("render backend %s: %s", choice.platform, choice.reason)

    def write(self, sel, opts: RenderOptions, plan: Plan, work, result: RenderResult, done, lock, progress: bool) -> None:
        if opts.parts:  # the table first: the part images are read with it
            write_text(sel.layout.parts_json, parts.parts_json())
        if plan.todo:
            _render(plan.data, opts, result, lock, sel.layout, progress, done)
        result.removed = remove_files(plan.stale_files, sel.layout.root)

    def record_result(self, plan: Plan, result: RenderResult) -> dict:
        return {"cameras": result.cameras, "frames": result.frames, "views_rendered": result.rendered,
                "views_resumed": result.resumed, "views_rendered_twice": result.rechecked,
                "hands_drawn": result.hands_drawn}


STAGE = RenderMesh()


def run(sel: SequenceSelector, opts: RenderOptions | None = None, progress: bool = True) -> RenderResult:
    return run_stage(STAGE, sel, opts or RenderOptions(), progress)


def _render(views: _Views, opts: RenderOptions, result: RenderResult, lock, layout: SequenceLayout, progress: bool,
            done) -> None:
    from tqdm import tqdm

    tasks = _tasks(views.cameras, views.todo)
    count = sum(len(v) for v in views.todo.values())
    workers = opts.render_workers or (usable_cpus() if count >= PARALLEL_MIN_VIEWS else 1)
    workers = max(1, min(workers, len(tasks)))
    bar = tqdm(total=count, desc=f"{layout.root.name} views", unit="view", disable=not progress, leave=False)
    first_done = None

    def finished(task_result: tuple[list[str], int]) -> None:
        nonlocal first_done
        units, rechecked = task_result
        done(units)
        result.rendered += len(units)
        result.rechecked += rechecked
        bar.update(len(units))
        if first_done is None:
            first_done = (time.perf_counter(), result.rendered)
        else:
            result.steady_views = result.rendered - first_done[1]
            result.steady_seconds = time.perf_counter() - first_done[0]

    try:
        if workers == 1 and gl_renderer.can_render_here(result.backend):
            with gl_renderer.HandViewRenderer(views.cameras, views.face_parts) as renderer:
                for size, frames, task_views in tasks:
                    written: list[str] = []
                    try:
                        _, rechecked = render_views(renderer, layout, size, frames, {f: views.meshes[f] for f in frames},
                                                    task_views, views.faces, opts.depth_format, written)
                    finally:
                        finished((written, 0))  # also the views finished before a stop
                    result.rechecked += rechecked
            return
        result.workers = workers
        # spawn: a fresh process (and GL context) per worker, never a forked one; each holds a copy
        # of the lock's descriptor, so the lock lasts until the last worker is gone. The platform
        # travels in the environment (select_platform set PYOPENGL_PLATFORM before the spawn).
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(os.getpid(), lock.inheritable(), views.cameras, views.faces,
                                           views.face_parts, str(layout.root), opts.depth_format)) as pool:
            jobs = [pool.submit(_render_task, size, frames, {f: views.meshes[f] for f in frames}, task_views)
                    for size, frames, task_views in tasks]
            collect_tasks(pool, jobs, finished)
    finally:
        bar.close()


def main(args) -> int:
    """render-mesh / render_mesh.py"""
    result = run(selector_from_args(args), from_args(RenderOptions, args), progress=not args.quiet)
    print(result.summary())
    return 0
