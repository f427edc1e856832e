"""The render_mesh stage: a hand mask and a depth map for every kept camera and kept frame.

Every hand that has MANO in a frame is drawn, also when --hand-type asks for one hand only, so an
occluding hand is never labelled as the other hand or as background. Vertices come from
vertices/<hand>/<frame>.npy, or, for a hand that get_annots did not process, from MANO directly.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from . import rendering
from .annots import SequenceSelector
from .cameras import CameraSet
from .dataset import InterHandDataset
from .errors import InputError
from .fileio import save_npy, sequence_lock, write_bytes
from .layout import SequenceLayout
from .mano import HANDS, load_mano_model, mano_layer

DEPTH_FORMATS = ("npy", "png16", "none")
PNG16_UNITS_PER_METRE = 10000  # depth png16: uint16 in units of 0.1 mm (max 6.5535 m)


@dataclass
class RenderOptions:
    backend: str = "auto"
    depth_format: str = "npy"
    all_cameras: bool = False
    workers: int = 0  # 0: one per core

    def validate(self) -> None:
        if self.depth_format not in DEPTH_FORMATS:
            raise InputError(f"unknown depth format {self.depth_format!r}; expected one of {', '.join(DEPTH_FORMATS)}")
        if self.backend not in rendering.BACKENDS:
            raise InputError(f"unknown backend {self.backend!r}; expected one of {', '.join(rendering.BACKENDS)}")
        if self.workers < 0:
            raise InputError(f"--workers must be 0 (one per core) or more, got {self.workers}")


@dataclass
class RenderResult:
    layout: SequenceLayout
    backend: str = ""
    rendered: int = 0
    skipped: int = 0
    cameras: int = 0
    frames: int = 0
    workers: int = 1
    seconds: float = 0.0
    hands_drawn: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        rate = f" ({self.rendered / self.seconds:.0f} views/s)" if self.rendered and self.seconds else ""
        hands = ", ".join(f"{h} in {n} frames" for h, n in self.hands_drawn.items())
        return (f"{self.layout.root}: masks and depth of {self.cameras} cameras x {self.frames} frames\n"
                f"  {self.rendered} views rendered, {self.skipped} already complete; {self.backend}, "
                f"{self.workers} worker(s); {self.seconds:.2f} s{rate}\n  hands drawn: {hands or 'none'}")


def encode_depth_png16(depth: np.ndarray) -> bytes:
    """float32 metres (H, W) -> 16-bit PNG in 0.1 mm units (0 = no hand)."""
    scaled = np.clip(np.rint(depth * PNG16_UNITS_PER_METRE), 0, 65535).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(scaled).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def encode_mask_png(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mask, mode="L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_view(layout: SequenceLayout, cam: str, frame: int, mask: np.ndarray, depth: np.ndarray, depth_format: str) -> None:
    """Write one view's outputs (depth first: a present mask marks the view done)."""
    if depth_format == "npy":
        save_npy(layout.depth(cam, frame, "npy"), depth[..., None].astype(np.float32))
    elif depth_format == "png16":
        write_bytes(layout.depth(cam, frame, "png16"), encode_depth_png16(depth))
    write_bytes(layout.mask(cam, frame), encode_mask_png(mask))


def view_done(layout: SequenceLayout, cam: str, frame: int, depth_format: str) -> bool:
    if not layout.mask(cam, frame).is_file():
        return False
    return depth_format == "none" or layout.depth(cam, frame, depth_format).is_file()


def _image_size(path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable image ({exc})") from None


def view_cameras(sel: SequenceSelector, layout: SequenceLayout, all_cameras: bool) -> list[rendering.ViewCamera]:
    """The cameras to render with their image sizes (one image header per camera)."""
    kept = layout.read_cameras()
    cams = kept
    if all_cameras:
        ds = InterHandDataset(sel.basedir, sel.split)
        on_disk = ds.sequence_images(sel.capture, sel.seq)
        every = ds.capture_cameras(sel.capture)
        extra = [c for c in sorted(on_disk, key=int) if c not in kept.ids and c in every.ids]
        if extra:
            more = every.subset(extra)
            cams = CameraSet(kept.ids + more.ids, np.concatenate([kept.K, more.K]), np.concatenate([kept.R, more.R]),
                             np.concatenate([kept.T, more.T]))
    out = []
    for c, cam in enumerate(cams.ids):
        images = sorted(layout.camera_dir(cam).glob("image*.jpg")) if layout.camera_dir(cam).is_dir() else []
        if not images:
            raise InputError(f"{layout.camera_dir(cam)}: no images to take camera {cam}'s image size from")
        width, height = _image_size(images[0])
        out.append(rendering.ViewCamera(cam, cams.K[c], cams.R[c], cams.T[c].reshape(3), width, height))
    return out


def frame_meshes(sel: SequenceSelector, layout: SequenceLayout, frames: list[int]) -> tuple[dict, dict]:
    """({frame: {hand: vertices}}, {hand: faces}) for every hand that has MANO in each frame."""
    meshes: dict[int, dict[str, np.ndarray]] = {f: {} for f in frames}
    faces = {}
    mano = None
    for hand in HANDS:
        model = load_mano_model(sel.mano_dir, hand)
        faces[hand] = model.faces
        if hand in sel.hands:
            for f in frames:
                meshes[f][hand] = layout.read_vertices(layout.vertices(hand, f), model.num_vertices)
            continue
        # the hand get_annots did not process: pose it from the annotations where it has MANO
        if mano is None:
            mano = InterHandDataset(sel.basedir, sel.split).capture_mano(sel.capture)
        have = [f for f, present in zip(frames, mano.has(frames, hand)) if present]
        if have:
            pose, shape, trans = mano.arrays(have, hand)
            vertices = mano_layer(sel.mano_dir, hand)(pose, shape, trans).vertices.astype(np.float32)
            for f, v in zip(have, vertices):
                meshes[f][hand] = v
    return meshes, faces


def _render_views(cameras: list[rendering.ViewCamera], todo: dict[str, set[int]], frames: list[int], meshes: dict,
                  faces: dict, layout_root: str, depth_format: str, progress_queue=None) -> int:
    """Render and write the views of `cameras` (runs in a worker process)."""
    layout = SequenceLayout(layout_root)
    done = 0
    with rendering.HandViewRenderer(cameras) as renderer, ThreadPoolExecutor(max_workers=2) as writer:
        pending = []
        # size by size: each worker switches GL contexts once per image size, not per view
        for size in renderer.sizes:
            size_cams = renderer.cameras_of_size(size)
            for frame in frames:
                views = [cam for cam in size_cams if frame in todo[cam]]
                if not views:
                    continue
                renderer.set_hands(size, {hand: (v, faces[hand]) for hand, v in meshes[frame].items()})
                for cam in views:
                    mask, depth = renderer.render(cam)
                    pending.append(writer.submit(write_view, layout, cam, frame, mask, depth, depth_format))
                while len(pending) > 64:  # bound the views held in memory for writing
                    pending.pop(0).result()
                done += len(views)
                if progress_queue is not None:
                    progress_queue.put(len(views))
        for future in pending:
            future.result()
    return done


def _split_cameras(cameras: list[rendering.ViewCamera], todo: dict[str, set[int]], parts: int) -> list[list]:
    """Balance cameras over workers by number of views, keeping cameras of one size together."""
    groups = [[] for _ in range(parts)]
    load = [0] * parts
    for cam in sorted(cameras, key=lambda c: (c.width, c.height, -len(todo[c.cam_id]))):
        k = int(np.argmin(load))
        groups[k].append(cam)
        load[k] += len(todo[cam.cam_id])
    return [g for g in groups if g]


def run(sel: SequenceSelector, opts: RenderOptions | None = None, progress: bool = True) -> RenderResult:
    opts = opts or RenderOptions()
    opts.validate()
    if not sel.layout.frames_txt.is_file():
        sel.layout.read_frames()  # the clear "run get_annots.py first" error, before any lock file
    with sequence_lock(sel.layout.root):
        return _run(sel, opts, progress)


def _run(sel: SequenceSelector, opts: RenderOptions, progress: bool) -> RenderResult:
    from tqdm import tqdm

    start = time.perf_counter()
    layout = sel.layout
    frames = layout.read_frames()
    result = RenderResult(layout=layout, frames=len(frames))
    cameras = view_cameras(sel, layout, opts.all_cameras)
    result.cameras = len(cameras)
    todo = {c.cam_id: {f for f in frames if sel.overwrite or not view_done(layout, c.cam_id, f, opts.depth_format)}
            for c in cameras}
    total = sum(len(v) for v in todo.values())
    result.skipped = len(cameras) * len(frames) - total
    meshes, faces = frame_meshes(sel, layout, frames)
    result.hands_drawn = {h: sum(h in m for m in meshes.values()) for h in HANDS}
    if total == 0:
        result.seconds = time.perf_counter() - start
        return result
    result.backend = rendering.select_platform(opts.backend)
    workers = min(opts.workers or os.cpu_count() or 1, len(cameras))
    groups = _split_cameras(cameras, todo, workers)
    result.workers = len(groups)
    tasks = [(g, {c.cam_id: todo[c.cam_id] for c in g}, frames) for g in groups]
    bar = tqdm(total=total, desc=f"{sel.seq} views", unit="view", disable=not progress, leave=False)
    if len(tasks) == 1 and rendering.can_render_here(result.backend):
        g, group_todo, task_frames = tasks[0]
        result.rendered = _render_views(g, group_todo, task_frames, meshes, faces, str(layout.root), opts.depth_format)
        bar.update(result.rendered)
    else:
        # spawn: each worker gets a fresh process (and GL context), never a forked one
        ctx = multiprocessing.get_context("spawn")
        with ctx.Manager() as manager, ProcessPoolExecutor(len(groups), mp_context=ctx) as pool:
            queue = manager.Queue()
            jobs = [pool.submit(_render_views, g, group_todo, task_frames, {f: meshes[f] for f in task_frames}, faces,
                                str(layout.root), opts.depth_format, queue) for g, group_todo, task_frames in tasks]
            finished = 0
            while finished < total and not all(j.done() for j in jobs):
                try:
                    n = queue.get(timeout=0.5)
                except Exception:  # queue.Empty through the manager proxy
                    continue
                finished += n
                bar.update(n)
            result.rendered = sum(j.result() for j in jobs)
            bar.update(result.rendered - finished)
    bar.close()
    result.seconds = time.perf_counter() - start
    return result
