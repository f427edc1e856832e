"""The refine_masks stage: every rendered MANO mask refined against its camera image.

For every view render_mesh drew, `mask_cihp/cam<id>/image<frame>.png` holds the hands as they
appear in the image (same labels as mask/: 0, 100 left, 200 right), by `core.mask_refine`: the
MANO outline moves onto the image's edges within a band around it, never past the wrist onto the
forearm, weighing colours under models of the hands and their surroundings learnt once per camera
(from up to 6 of its frames spread over the sequence). mask/ stays the MANO render. The work goes
out in one task per camera (its colour models, then its views), over worker processes from 200
views on. HandNeRF's loaders read mask_cihp/ before mask/ (the Neural
Body convention for masks taken from the images), so a refined sequence needs no change there.

`mask_quality.csv` has one row per view and hand of the sequence:
    frame, camera, hand, mano_pixels, refined_pixels, iou_with_mano, status
status is `refined`, `kept_mano_<reason>` (mask_cihp/ holds the MANO mask of that hand in that
view; reasons: black_image, too_small, no_contrast, collapsed, exploded, disagrees) or `no_hand`
(the hand is not in the view). refined_pixels and iou_with_mano describe what the refinement
found, also where its result was not kept; they are empty where it did not run.

A camera is flagged in the summary (and the record) when its median IoU with MANO lies more than
3 median absolute deviations, and at least 0.05, below the sequence's median over all cameras: a
dead, dark or miscalibrated camera. Views of black images count as IoU 0 there.

Reruns: the recipe (the method's settings) decides whether every view is redone; render_mesh's
digests of each frame's meshes and of each camera, and the size and time of each camera's images,
decide which views are. A stopped run keeps the rows of the views it finished in `.refine_masks.rows`
beside its journal, so a rerun does only the rest.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import logging
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..core import mask_refine
from ..core.cameras import CameraSet
from ..core.constants import HANDS
from ..core.errors import InputError
from ..core.fileio import remove_files, write_text
from ..core.layout import MASK_LABELS, SequenceLayout, decode_mask
from ..core.locking import die_with_parent, usable_cpus
from ..core.mano import load_mano_model
from ..core.options import RefineOptions, from_args, recipe as options_recipe
from ..core.processed import frame_meshes, processed_hands, refine_digests, refine_recipe, view_cameras
from ..core import registry
from ..core.selection import SequenceSelector, selector_from_args
from .base import Plan, Previous, Stage, StageResult, collect_tasks, plan_views, run_stage, view_unit

log = logging.getLogger(__name__)

QUALITY_COLUMNS = ("frame", "camera", "hand", "mano_pixels", "refined_pixels", "iou_with_mano", "status")
KIND = "mask_cihp"
# a task: one camera's colour models (learnt in ~0.5 s), then up to this many of its views (~10 ms each)
VIEWS_PER_TASK = 100
PARALLEL_MIN_VIEWS = 200  # below, one process (a worker's start-up costs about 100 views)
WRIST, MIDDLE_KNUCKLE = 0, 4  # MANO joint order (mano.JOINT_NAMES)
FLAG_MADS, FLAG_MIN_DROP = 3.0, 0.05
LABEL_HAND = {label: hand for hand, label in MASK_LABELS.items()}


@dataclass
class RefineResult(StageResult):
    cameras: int = 0
    frames: int = 0
    refined_views: int = 0
    skipped: int = 0
    removed: int = 0
    workers: int = 1
    statuses: dict[str, int] = field(default_factory=dict)   # per hand and view
    flagged: dict[str, str] = field(default_factory=dict)    # camera -> why

    def summary(self) -> str:
        if self.up_to_date:
            return (f"{self.layout.root}: refined masks up to date ({self.cameras} cameras x {self.frames} frames); "
                    "nothing to do")
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items(), key=lambda kv: -kv[1]))
        lines = [f"{self.layout.root}: masks refined against the images, {self.cameras} cameras x {self.frames} frames"
                 + (f"  ({self.reason})" if self.reason else ""),
                 f"  {self.refined_views} views refined, {self.skipped} up to date"
                 + (f" ({self.resumed} of them finished by an interrupted run)" if self.resumed else "")
                 + f", {self.removed} files removed; {self.workers} worker(s); {self.seconds:.2f} s",
                 f"  hands in views: {statuses or 'none'} (mask_quality.csv)"]
        if self.flagged:
            lines.append(f"  {len(self.flagged)} camera(s) disagree with MANO far more than the others "
                         "(dead, dark or miscalibrated?):")
            lines += [f"    cam{cam}: {why}" for cam, why in sorted(self.flagged.items())]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Pure parts: where the hands are in each view, the quality table, the camera rule


def hands_in_views(cameras: CameraSet, joints_mm: dict[str, np.ndarray]) -> list[list[mask_refine.HandInView]]:
    """Per camera, the hands of one frame: joints_mm {hand: 16x3 world joints (mm)} ->
    [[HandInView for each hand] for each camera]."""
    out: list[list[mask_refine.HandInView]] = [[] for _ in cameras.ids]
    for hand, joints in joints_mm.items():
        pixels, depth = cameras.project(joints[[WRIST, MIDDLE_KNUCKLE]])
        focal = cameras.K[:, [0, 1], [0, 1]].mean(axis=1)
        for c in range(len(cameras.ids)):
            ahead = depth[c, 0] > 0
            scale = float(focal[c] / depth[c, 0]) if ahead else float("nan")
            out[c].append(mask_refine.HandInView(MASK_LABELS[hand], pixels[c, 0], pixels[c, 1] if ahead else pixels[c, 0],
                                                 scale))
    return out


def quality_rows(frame: int, cam: str, outcomes: list[mask_refine.HandOutcome], hands: tuple[str, ...]) -> list[list[str]]:
    """The table rows of one view: one per hand of the sequence (no_hand for those not in it)."""
    by_hand = {LABEL_HAND[o.label]: o for o in outcomes}
    rows = []
    for hand in hands:
        o = by_hand.get(hand)
        if o is None:
            rows.append([str(frame), cam, hand, "0", "", "", mask_refine.NO_HAND])
            continue
        rows.append([str(frame), cam, hand, str(o.mano_pixels), "" if o.refined_pixels is None else str(o.refined_pixels),
                     "" if o.iou is None else f"{o.iou:.4f}", o.status])
    return rows


def camera_flags(rows: list[list[str]]) -> dict[str, str]:
    """{camera: why} for cameras whose median IoU with MANO is an outlier low (module docstring)."""
    per_cam: dict[str, list[float]] = {}
    for frame, cam, hand, mano_px, refined_px, iou, status in rows:
        if status == mask_refine.KEPT + "black_image":
            per_cam.setdefault(cam, []).append(0.0)
        elif iou:
            per_cam.setdefault(cam, []).append(float(iou))
    if len(per_cam) < 3:
        return {}
    medians = {cam: float(np.median(v)) for cam, v in per_cam.items()}
    values = np.array(list(medians.values()))
    centre = float(np.median(values))
    mad = float(np.median(np.abs(values - centre)))
    limit = centre - max(FLAG_MADS * mad, FLAG_MIN_DROP)
    return {cam: f"median IoU with MANO {m:.3f}, against {centre:.3f} over all cameras (limit {limit:.3f})"
            for cam, m in medians.items() if m < limit}


def read_rows(text: str) -> dict[str, list[list[str]]]:
    """Table text (with or without its header) -> {view unit: rows}."""
    out: dict[str, list[list[str]]] = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) != len(QUALITY_COLUMNS) or row[0] == QUALITY_COLUMNS[0]:
            continue
        out.setdefault(view_unit(int(row[0]), row[1]), []).append(row)
    return out


def rows_text(rows: list[list[str]], header: bool = False) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(QUALITY_COLUMNS)
    writer.writerows(rows)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Work on views (in this process or in spawned workers)

_worker: dict = {}


def _init_worker(parent: int, lock, layout_root: str, params: mask_refine.RefineParams) -> None:
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the pool on Ctrl-C
    _worker.update(lock=lock, layout=SequenceLayout(layout_root), params=params)


def _refine_task(cam: str, views: list[tuple[int, str, list[mask_refine.HandInView]]], hands: tuple[str, ...],
                 samples: list[tuple[int, list[mask_refine.HandInView]]]) -> list[tuple[str, list]]:
    layout, params = _worker["layout"], _worker["params"]
    return refine_views(layout, views, hands, params, camera_model(layout, cam, samples, params))


def read_view(layout: SequenceLayout, cam: str, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """(image (H, W, 3) uint8 RGB, MANO mask (H, W) uint8) of one view; one-line errors."""
    from PIL import Image

    path = layout.image(cam, frame)
    try:
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable image ({exc})") from None
    mano = decode_mask(layout.mask(cam, frame))
    if mano.shape != image.shape[:2]:
        raise InputError(f"{layout.mask(cam, frame)}: mask is {mano.shape[1]}x{mano.shape[0]}, its image "
                         f"{image.shape[1]}x{image.shape[0]}; rerun render_mesh.py")
    return image, mano


def camera_model(layout: SequenceLayout, cam: str, samples: list[tuple[int, list[mask_refine.HandInView]]],
                 params: mask_refine.RefineParams) -> mask_refine.ColourModel | None:
    """A camera's colour models, from its views of the frames [(frame, hands in view)]."""
    return mask_refine.camera_model([(*read_view(layout, cam, frame), in_view) for frame, in_view in samples], params)


def refine_views(layout: SequenceLayout, views: list[tuple[int, str, list[mask_refine.HandInView]]],
                 hands: tuple[str, ...], params: mask_refine.RefineParams, model: mask_refine.ColourModel | None,
                 done: list | None = None) -> list[tuple[str, list]]:
    """Refine and write the views [(frame, camera, hands in view)] of one camera, whose colour
    models are `model` -> [(unit, table rows)], also appended to `done` as each view's file is
    complete."""
    done = [] if done is None else done
    for frame, cam, in_view in views:
        image, mano = read_view(layout, cam, frame)
        refined, outcomes = mask_refine.refine_view(image, mano, in_view, params, model)
        layout.write_view(cam, frame, {KIND: (refined, "png")})
        done.append((view_unit(frame, cam), quality_rows(frame, cam, outcomes, hands)))
    return done


# ---------------------------------------------------------------------------------------------
# The stage


@dataclass
class _Views:
    frames: list[int]
    cameras: list[str]
    hands: tuple[str, ...]                 # the hands of the sequence (table rows per view)
    todo: list[tuple[int, str, list]]      # (frame, camera, hands in view)
    expected: list[str]                    # every view unit, in table order
    # per camera with views to refine: the frames its colour models are learnt from, with the
    # hands in those views (mask_refine.model_frames of every frame: the same whatever is redone)
    samples: dict[str, list[tuple[int, list]]] = field(default_factory=dict)


class RefineMasks(Stage):
    def check(self, sel: SequenceSelector, opts: RefineOptions) -> None:
        if not sel.layout.frames_txt.is_file():
            sel.layout.read_frames()  # the clear "run get_annots.py first" error
        super().check(sel, opts)
        if importlib.util.find_spec("cv2") is None:
            raise InputError("refine_masks needs OpenCV: pip install opencv-python-headless (requirements.txt pins it)")

    def plan(self, sel: SequenceSelector, opts: RefineOptions, previous: Previous) -> Plan:
        layout = sel.layout
        render = previous.manifest.stage(registry.RENDER_MESH.name)
        if not isinstance(render, dict) or not isinstance(render.get("frames"), dict):
            raise InputError(f"{layout.root}: no masks rendered here (run render_mesh.py first)")
        frames = layout.read_frames()
        all_cameras = bool((render.get("inputs") or {}).get("all_cameras"))
        cameras = view_cameras(sel, layout, all_cameras)
        recipe = refine_recipe(options_recipe(opts), render)
        params = mask_refine.RefineParams(**recipe["method"])
        frame_digests, camera_digests = refine_digests(layout, render, [c.cam_id for c in cameras], frames)
        global_reason = "--overwrite" if sel.overwrite else previous.manifest.stale_reason(self.name, recipe)
        views = plan_views(self.name, layout, previous, recipe, global_reason, frames, cameras, frame_digests,
                          camera_digests, {KIND: "png"})
        todo_views = [(int(frame), cam) for frame, cam in (unit.split(":") for unit in views.todo)]
        expected = [view_unit(f, c.cam_id) for f in frames for c in cameras]
        return Plan(views.reason, recipe, inputs={"all_cameras": all_cameras},
                    state={"frames": frame_digests, "cameras": camera_digests}, todo=views.todo, total=views.total,
                    resumed=views.resumed, needed_bytes=views.needed_bytes, needed_for=f"{len(views.todo)} refined masks",
                    stale_files=views.stale_files,
                    data=(_Views(frames, [c.cam_id for c in cameras], (), [], expected), todo_views, cameras, params))

    def new_result(self, sel: SequenceSelector, opts: RefineOptions, plan: Plan) -> RefineResult:
        views = plan.data[0]
        result = RefineResult(layout=sel.layout, frames=len(views.frames), cameras=len(views.cameras))
        result.skipped = plan.total - len(plan.todo)
        return result

    def prepare(self, sel: SequenceSelector, opts: RefineOptions, plan: Plan, result: RefineResult):
        """Where each hand is in each view to refine (joints of the MANO meshes, projected)."""
        views, todo_views, cameras, params = plan.data
        meshes, _ = frame_meshes(sel, sel.layout, views.frames, processed_hands(sel))
        hands = tuple(h for h in HANDS if any(h in m for m in meshes.values()))
        regressors = {h: load_mano_model(sel.mano_dir, h).J_regressor for h in hands}
        camera_set = CameraSet([c.cam_id for c in cameras], np.stack([c.K for c in cameras]),
                               np.stack([c.R for c in cameras]), np.stack([np.reshape(c.T, 3) for c in cameras]))
        index = {c.cam_id: i for i, c in enumerate(cameras)}
        per_frame: dict[int, list] = {}

        def in_view(f: int, cam: str) -> list:
            if f not in per_frame:
                joints = {h: regressors[h] @ v.astype(np.float64) * 1000.0 for h, v in meshes[f].items()}
                per_frame[f] = hands_in_views(camera_set, joints)
            return per_frame[f][index[cam]]

        views.todo = [(f, cam, in_view(f, cam)) for f, cam in todo_views]
        sample_frames = mask_refine.model_frames(views.frames, params.model_frames)
        views.samples = {cam: [(f, in_view(f, cam)) for f in sample_frames] for cam in sorted({c for _, c in todo_views})}
        views.hands = hands
        return views

    def write(self, sel, opts: RefineOptions, plan: Plan, work: _Views, result: RefineResult, done, lock,
              progress: bool) -> None:
        layout = sel.layout
        rows_path = layout.unfinished_rows(self.name)
        new_rows: dict[str, list] = {}
        if work.todo:
            with open(rows_path, "a", encoding="utf-8") as rows_file:
                def finished(units_rows: list[tuple[str, list]]) -> None:
                    for unit, rows in units_rows:
                        new_rows[unit] = rows
                    rows_file.write(rows_text([r for _, rows in units_rows for r in rows]))
                    rows_file.flush()
                    os.fsync(rows_file.fileno())  # the rows before the journal says done
                    done([unit for unit, _ in units_rows])
                    result.refined_views += len(units_rows)

                _refine(work, plan.data[3], opts, result, lock, layout, progress, finished)
        result.removed = remove_files(plan.stale_files, layout.root)
        rows = _table_rows(layout, work, rows_path, new_rows)
        for row in rows:
            result.statuses[row[6]] = result.statuses.get(row[6], 0) + 1
        result.flagged = camera_flags(rows)
        write_text(layout.mask_quality, rows_text(rows, header=True))
        rows_path.unlink(missing_ok=True)

    def record_result(self, plan: Plan, result: RefineResult) -> dict:
        return {"cameras": result.cameras, "frames": result.frames, "views_refined": result.refined_views,
                "views_resumed": result.resumed, "statuses": result.statuses, "flagged_cameras": result.flagged}


def _table_rows(layout: SequenceLayout, views: _Views, rows_path, new_rows: dict[str, list]) -> list[list[str]]:
    """mask_quality.csv's rows for every view: this run's, else an unfinished run's, else the old table's."""
    old = read_rows(layout.mask_quality.read_text(encoding="utf-8")) if layout.mask_quality.is_file() else {}
    partial = read_rows(rows_path.read_text(encoding="utf-8")) if rows_path.is_file() else {}
    rows = []
    for unit in views.expected:
        found = new_rows.get(unit) or partial.get(unit) or old.get(unit)
        if found is None:
            frame, cam = unit.split(":")
            raise InputError(f"{layout.mask_quality}: no row for camera {cam}, frame {frame}; "
                             "rerun refine_masks.py with --overwrite")
        rows += found
    return rows


STAGE = RefineMasks()


def run(sel: SequenceSelector, opts: RefineOptions | None = None, progress: bool = True) -> RefineResult:
    return run_stage(STAGE, sel, opts or RefineOptions(), progress)


def _refine(views: _Views, params: mask_refine.RefineParams, opts: RefineOptions, result: RefineResult, lock,
            layout: SequenceLayout, progress: bool, finished) -> None:
    """One task per camera (or per VIEWS_PER_TASK of its views): its colour models, then its views."""
    from tqdm import tqdm

    by_camera: dict[str, list] = {}
    for view in views.todo:
        by_camera.setdefault(view[1], []).append(view)
    tasks = [(cam, chunk[i:i + VIEWS_PER_TASK]) for cam, chunk in by_camera.items()
             for i in range(0, len(chunk), VIEWS_PER_TASK)]
    workers = opts.refine_workers or (usable_cpus() if len(views.todo) >= PARALLEL_MIN_VIEWS else 1)
    workers = max(1, min(workers, len(tasks)))
    bar = tqdm(total=len(views.todo), desc=f"{layout.root.name} refined masks", unit="view", disable=not progress,
               leave=False)

    def report(units_rows) -> None:
        finished(units_rows)
        bar.update(len(units_rows))

    try:
        if workers == 1:
            models: dict = {}
            for cam, task in tasks:
                if cam not in models:
                    models = {cam: camera_model(layout, cam, views.samples[cam], params)}  # one camera's at a time
                written: list = []
                try:
                    refine_views(layout, task, views.hands, params, models[cam], written)
                finally:
                    if written:
                        report(written)  # also the views finished before a stop
            return
        result.workers = workers
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(os.getpid(), lock.inheritable(), str(layout.root), params)) as pool:
            jobs = [pool.submit(_refine_task, cam, task, views.hands, views.samples[cam]) for cam, task in tasks]
            collect_tasks(pool, jobs, report)
    finally:
        bar.close()


def main(args) -> int:
    """refine-masks / refine_masks.py"""
    result = run(selector_from_args(args), from_args(RefineOptions, args), progress=not args.quiet)
    print(result.summary())
    return 0
