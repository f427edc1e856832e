"""Stress test of render_mesh's hand labels: both hands, portrait and landscape cameras in one
sequence, every renderer path (OSMesa drawing crops, EGL drawing whole images; one process and
worker processes), and reruns that render only some views (masks deleted, a frame's hand moved,
a camera changed, masks damaged, another depth format, one hand requested). After every run each
mask is compared with the CPU ray cast of conftest (`helpers.ray_cast`, Moller-Trumbore through
every pixel centre), which shares nothing with the GL pipeline.

Why: a mask of the demo capture once came out with both hands labelled 100 (the left hand's label)
and the same outline as the right mask (shared/fixtures/evidence/wrong_label_mask); it did not
reproduce. A wrong label flips thousands of pixels of one hand; pixel-centre sampling and
rasterisation rules differ only on edges (a few pixels a view). Per view:
- of the pixels both the render and the ray cast call hand, >= 99.5% carry the same label
  (LABEL_AGREEMENT; observed in the default variant: 2 pixels of 113,590 over 91 view checks per
  platform; on the demo's 286 views at full size: 13 of 6.8 million, at most 2 in a view);
- no hand the ray cast sees on 50 or more pixels (MISSING_HAND_PIXELS) is absent from the mask;
- the outlines (mask > 0) agree with an IoU >= 0.98 (OUTLINE_IOU).

A process fixes its PyOpenGL platform at the first pyrender import, so each platform renders in a
child process of its own (`_Child`: render_mesh.run and HandViewRenderer driven over a pipe), set
up with `gl_platform.select_platform` before anything imports pyrender; a platform that does not
work here is skipped with the reason. This process only checks.

Default variant: the `tiny` capture at 1/4 size (3 portrait cameras, 84x128, and 1 landscape
camera, 128x84; 5 frames with both hands, and a sixth without a left hand that only the
right-hand-only run keeps), 5 runs per platform (fresh; masks deleted and a hand moved, in 2
worker processes; a camera changed; damaged masks with --overwrite and png16 depth; the right
hand only), 91 view checks and ~6 s per platform on 2 cores. The long variant (`slow`, and only
with INTERHAND_PREP_STRESS=1) takes 10 cameras x 12 frames through INTERHAND_PREP_STRESS_ROUNDS
(default 6) rounds of these with 1-3 workers (~3 min for both platforms).

`test_osmesa_crops_are_whole_image_renders` checks gl_renderer's claim that a crop gives the result
of a full-size render: OSMesa with crops (its default) against `renderer.crops = False`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from interhand_prep.core import gl_platform as gl_platform_module
from interhand_prep.core.mano import load_mano_model
from interhand_prep.core.options import AnnotsOptions
from interhand_prep.core.selection import SequenceSelector
from interhand_prep.stages import get_annots

SEQ = "0266_dh_pray"
LABELS = {"left": 100, "right": 200}
LABEL_AGREEMENT = 0.995
MISSING_HAND_PIXELS = 50
OUTLINE_IOU = 0.98

# The child: renders on the platform named in argv[1], one JSON command per line on stdin, one
# reply per command on stdout (a line starting with REPLY); everything else goes to stderr.
REPLY = "@@reply "
CHILD = textwrap.dedent(r'''
    import json, os, sys, traceback
    from pathlib import Path
    platform = sys.argv[1]
    real_stdout, sys.stdout = sys.stdout, sys.stderr  # only replies on the pipe
    from interhand_prep.core import gl_platform
    gl_platform.select_platform(platform)  # sets PYOPENGL_PLATFORM before pyrender is imported
    import numpy as np
    from interhand_prep.core.options import RenderOptions
    from interhand_prep.core.selection import SequenceSelector
    from interhand_prep.stages import render_mesh

    def selector(d):
        return SequenceSelector(**{k: Path(v) if v is not None and k in ("basedir", "mano_dir", "out_root") else v
                                   for k, v in d.items()})

    def op_run(cmd):
        result = render_mesh.run(selector(cmd["sel"]), RenderOptions(backend=platform, **cmd["opts"]), progress=False)
        return {"rendered": result.rendered, "workers": result.workers, "backend": result.backend,
                "reason": getattr(result, "reason", "")}

    def op_views(cmd):
        """Every view of a processed sequence straight from HandViewRenderer -> an npz of masks
        and depth maps (crops as given; None: the renderer's default), in the order asked."""
        from PIL import Image
        from interhand_prep.core import gl_renderer
        from interhand_prep.core.layout import SequenceLayout
        from interhand_prep.core.mano import load_mano_model
        layout = SequenceLayout(cmd["root"])
        cams = layout.read_cameras()
        views = []
        for c, cam in enumerate(cams.ids):
            width, height = Image.open(next(iter(sorted(layout.camera_dir(cam).glob("image*.jpg"))))).size
            views.append(gl_renderer.ViewCamera(cam, cams.K[c], cams.R[c], cams.T[c].reshape(3), width, height))
        faces = {h: load_mano_model(cmd["mano_dir"], h).faces for h in ("left", "right")}
        out = {}
        with gl_renderer.HandViewRenderer(views) as renderer:
            if cmd["crops"] is not None:
                renderer.crops = cmd["crops"]
            for frame, cam in cmd["order"]:
                view = next(v for v in views if v.cam_id == cam)
                size = (view.width, view.height)
                meshes = {h: (np.load(layout.vertices(h, frame)), faces[h]) for h in faces
                          if layout.vertices(h, frame).is_file()}
                renderer.set_hands(size, meshes)
                mask, depth = renderer.render(cam)
                out[f"mask_{cam}_{frame}"], out[f"depth_{cam}_{frame}"] = mask, depth
            crops = renderer.crops
        np.savez(cmd["out"], **out)
        return {"crops": bool(crops)}

    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            reply = {"ok": True, **globals()["op_" + cmd["op"]](cmd)}
        except BaseException:
            reply = {"ok": False, "error": traceback.format_exc()}
        real_stdout.write("''' + REPLY + r'''" + json.dumps(reply) + "\n")
        real_stdout.flush()
''')


class _Child:
    """A process that renders on one platform (each platform needs its own process)."""

    def __init__(self, platform: str, repo: Path, log: Path):
        self.platform = platform
        self.log = log
        self._stderr = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, platform], cwd=repo, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, text=True)

    def __call__(self, meanwhile=None, **cmd) -> dict:
        """Run `cmd` there; `meanwhile()` runs here while the child works (the ray casts the
        check will need: the two processes use both cores)."""
        self.proc.stdin.write(json.dumps(cmd, default=str) + "\n")
        self.proc.stdin.flush()
        if meanwhile is not None:
            meanwhile()
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                reply = json.loads(line[len(REPLY):])
                if not reply.pop("ok"):
                    pytest.fail(f"{self.platform} child: {cmd['op']} failed:\n{reply['error']}")
                return reply
        pytest.fail(f"{self.platform} child died (exit {self.proc.wait()}):\n{self.log.read_text()[-3000:]}")

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._stderr.close()


@pytest.fixture
def child(repo, tmp_path):
    """child(platform) -> a _Child rendering on it, or skip with the platform's reason."""
    started = []

    def start(platform: str) -> _Child:
        reason = gl_platform_module.verdict(platform)[0]
        if reason is not None:
            pytest.skip(f"{platform} does not work here: {reason}")
        started.append(_Child(platform, repo, tmp_path / f"{platform}-{len(started)}.log"))
        return started[-1]

    yield start
    for c in started:
        c.close()


# ---------------------------------------------------------------------------------------------
# Checking masks against the ray cast


_RAY_CAST_CACHE: dict[str, np.ndarray] = {}  # shared by the tests of this module (same capture, same changes)


class RayCasts:
    """The ray cast of views, cached by camera and mesh content (reruns redo only changed views)."""

    def __init__(self, helpers, mano_dir: Path):
        self.helpers = helpers
        self.faces = {h: load_mano_model(mano_dir, h).faces for h in LABELS}
        self.cache = _RAY_CAST_CACHE

    def __call__(self, layout, cam: str, frame: int, width: int, height: int):
        meshes = {h: (np.load(layout.vertices(h, frame)), self.faces[h]) for h in LABELS
                  if layout.vertices(h, frame).is_file()}
        cams = layout.read_cameras()
        c = cams.ids.index(cam)
        key = hashlib.sha1(b"".join([self.faces["left"].tobytes(), self.faces["right"].tobytes(),
                                     cams.K[c].tobytes(), cams.R[c].tobytes(), cams.T[c].tobytes(),
                                     f"{width}x{height}".encode()]
                                    + [h.encode() + m[0].tobytes() for h, m in sorted(meshes.items())])).hexdigest()
        if key not in self.cache:
            self.cache[key] = self.helpers.ray_cast(layout, None, cam, frame, width, height, meshes=meshes)[0]
        return self.cache[key]


    def warm(self, layout, views=None) -> None:
        """Cast the views {(cam, frame)} of `layout` (default: all) ahead of their check."""
        for cam in layout.read_cams():
            width, height = image_size(layout, cam)
            for frame in layout.read_frames():
                if views is None or (cam, frame) in views:
                    self(layout, cam, frame, width, height)


def image_size(layout, cam: str) -> tuple[int, int]:
    return Image.open(next(iter(sorted(layout.camera_dir(cam).glob("image*.jpg"))))).size


def view_problems(mask: np.ndarray, label: np.ndarray) -> tuple[list[str], dict]:
    """The rules of the module docstring for one view -> (problems, numbers)."""
    problems = []
    values = set(np.unique(mask).tolist())
    if mask.dtype != np.uint8 or not values <= {0, 100, 200}:
        problems.append(f"values {sorted(values)} ({mask.dtype})")
    both = (mask > 0) & (label > 0)
    disagree = int((mask[both] != label[both]).sum())
    agreement = 1.0 - disagree / both.sum() if both.any() else 1.0
    if agreement < LABEL_AGREEMENT:
        counts = {v: int((mask == v).sum()) for v in (100, 200)}
        expected = {v: int((label == v).sum()) for v in (100, 200)}
        problems.append(f"labels agree on {agreement:.2%} of {int(both.sum())} hand pixels (render {counts}, "
                        f"ray cast {expected})")
    for hand, value in LABELS.items():
        seen = int((label == value).sum())
        if seen >= MISSING_HAND_PIXELS and not (mask == value).any():
            problems.append(f"the {hand} hand ({value}) is missing; the ray cast sees it on {seen} pixels")
    union = ((mask > 0) | (label > 0)).sum()
    iou = ((mask > 0) & (label > 0)).sum() / union if union else 1.0
    if iou < OUTLINE_IOU:
        problems.append(f"outline IoU {iou:.4f}")
    return problems, {"hand_pixels": int(both.sum()), "disagree": disagree, "outline": int(union - both.sum())}


def check_masks(layout, reference, ray_casts: RayCasts, what: str, views=None) -> dict:
    """Every mask of `layout` (or `views` {(cam, frame)}) against the ray cast of `reference`'s
    cameras and meshes (the same layout, or one with both hands' vertices). -> totals."""
    totals = {"views": 0, "hand_pixels": 0, "disagree": 0, "outline": 0}
    failures = []
    for cam in reference.read_cams():
        width, height = image_size(reference, cam)
        for frame in reference.read_frames():
            if views is not None and (cam, frame) not in views:
                continue
            mask = np.asarray(Image.open(layout.mask(cam, frame)))
            assert mask.shape == (height, width), (cam, frame, mask.shape)
            problems, numbers = view_problems(mask, ray_casts(reference, cam, frame, width, height))
            totals["views"] += 1
            for k in ("hand_pixels", "disagree", "outline"):
                totals[k] += numbers[k]
            failures += [f"cam{cam} frame {frame}: {p}" for p in problems]
    assert not failures, f"{what}: {len(failures)} problem(s) in {totals['views']} views:\n" + "\n".join(failures[:20])
    assert totals["views"], f"{what}: no views checked"
    return totals


# ---------------------------------------------------------------------------------------------
# Changes between runs


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def move_hand(basedir: Path, frame: int, hand: str, offset_m) -> None:
    """Move one hand of one frame in the MANO annotations (its mesh changes: that frame is stale)."""
    def change(data):
        entry = data["0"][str(frame)][hand]
        entry["trans"] = (np.asarray(entry["trans"]) + offset_m).tolist()
    edit_json(basedir / "annotations" / "train" / "InterHand2.6M_train_MANO_NeuralAnnot.json", change)


def change_camera(basedir: Path, cam: str, focal_factor: float) -> None:
    """Zoom one camera (its views are stale)."""
    def change(data):
        data["0"]["focal"][cam] = (np.asarray(data["0"]["focal"][cam]) * focal_factor).tolist()
    edit_json(basedir / "annotations" / "train" / "InterHand2.6M_train_camera.json", change)


def swap_labels(path: Path) -> None:
    """A damaged mask: both labels exchanged (the outline stays)."""
    mask = np.asarray(Image.open(path))
    Image.fromarray(np.where(mask == 100, 200, np.where(mask == 200, 100, 0)).astype(np.uint8)).save(path)


def annotate(root: Path, hand_type: str = "both", out_root: Path | None = None) -> SequenceSelector:
    sel = SequenceSelector(capture=0, seq=SEQ, basedir=root / "IH", mano_dir=root / "mano", hand_type=hand_type,
                           out_root=out_root)
    get_annots.run(sel, AnnotsOptions(keep_landscape=True), progress=False)
    return sel


def as_dict(sel: SequenceSelector) -> dict:
    return {"capture": sel.capture, "seq": sel.seq, "basedir": str(sel.basedir), "mano_dir": str(sel.mano_dir),
            "hand_type": sel.hand_type, "out_root": str(sel.out_root) if sel.out_root else None,
            "overwrite": sel.overwrite}


def render(renderer: _Child, sel: SequenceSelector, meanwhile=None, **opts) -> dict:
    return renderer(op="run", sel=as_dict(sel), opts=opts, meanwhile=meanwhile)


def all_views(layout) -> set:
    return {(c, f) for c in layout.read_cams() for f in layout.read_frames()}


def two_sizes(layout) -> None:
    sizes = {image_size(layout, c) for c in layout.read_cams()}
    assert len(sizes) == 2 and any(w < h for w, h in sizes) and any(w > h for w, h in sizes), sizes


def check_one_hand_requested(layout, both, ray_casts: RayCasts) -> list[dict]:
    """The masks of a right-hand-only run (the left hand posed by render_mesh) against the ray cast
    of both hands from the two-hand run `both`; frames that run dropped (no left MANO) against the
    right hand alone."""
    shared = all_views(layout) & all_views(both)
    assert shared
    log = [check_masks(layout, both, ray_casts, "right hand only", shared)]
    rest = all_views(layout) - shared
    if rest:
        log.append(check_masks(layout, layout, ray_casts, "right hand only, frames without a left hand", rest))
    return log


def rerun_cycle(renderer: _Child, sel: SequenceSelector, ray_casts: RayCasts, rng: random.Random, cycle: int,
                workers: tuple[int, int], log: list, depth_format: str = "npy") -> None:
    """Delete masks and move a hand, rerun (workers[0] processes), check; change a camera, rerun
    (workers[1]), check: only the stale views are rendered (`depth_format`: the last run's)."""
    root = sel.basedir.parent
    layout = sel.layout
    views = sorted(all_views(layout))
    frames = layout.read_frames()
    # a frame's hand moves (every camera of that frame is stale) and some masks go missing
    frame = rng.choice([f for f in frames if layout.vertices("left", f).is_file()] or frames)
    hand = "left" if layout.vertices("left", frame).is_file() else "right"
    move_hand(root / "IH", frame, hand, np.array([rng.uniform(-0.01, 0.01), rng.uniform(-0.01, 0.01), 0.0]))
    sel = annotate(root)
    deleted = set(rng.sample(views, max(1, len(views) // 4)))
    for cam, f in deleted:
        layout.mask(cam, f).unlink()
    stale = deleted | {(c, frame) for c in layout.read_cams()}
    result = render(renderer, sel, render_workers=workers[0], depth_format=depth_format,
                    meanwhile=lambda: ray_casts.warm(layout, stale))
    assert result["rendered"] == len(stale), (result, len(stale))
    assert (result["workers"] > 1) == (workers[0] > 1), result  # worker processes, or this one
    log.append(check_masks(layout, layout, ray_casts, f"cycle {cycle} partial rerun ({workers[0]} workers)", stale))
    # a camera changes: only its views are redone
    cam = rng.choice(layout.read_cams())
    change_camera(root / "IH", cam, rng.choice([0.97, 1.03]))
    sel = annotate(root)
    result = render(renderer, sel, render_workers=workers[1], depth_format=depth_format,
                    meanwhile=lambda: ray_casts.warm(layout))
    assert result["rendered"] == len(frames), result
    log.append(check_masks(layout, layout, ray_casts, f"cycle {cycle} camera rerun ({workers[1]} workers)"))


# ---------------------------------------------------------------------------------------------
# The tests


@pytest.mark.parametrize("platform", ["osmesa", "egl"])
def test_every_label_of_every_rerun_matches_the_ray_cast(platform, tiny, tmp_path, helpers, child):
    renderer = child(platform)
    ray_casts = RayCasts(helpers, tiny / "mano")
    rng = random.Random(7)
    log = []
    sel = annotate(tiny)
    layout = sel.layout
    two_sizes(layout)
    views = sorted(all_views(layout))

    # 1. fresh, in this process's one renderer
    result = render(renderer, sel, render_workers=1, meanwhile=lambda: ray_casts.warm(layout))
    assert (result["rendered"], result["workers"], result["backend"]) == (len(views), 1, platform), result
    log.append(check_masks(layout, layout, ray_casts, "fresh run"))

    # 2. some masks deleted and one frame's left hand moved: only those views, in two worker
    #    processes; then a camera changed: only its views, in this process
    rerun_cycle(renderer, sel, ray_casts, rng, 1, (2, 1), log)

    # 3. damaged masks, another depth format, --overwrite: everything again, the damage repaired
    damaged = rng.sample(views, 3)
    for cam, frame in damaged:
        swap_labels(layout.mask(cam, frame))
    result = render(renderer, sel.replace(overwrite=True), render_workers=1, depth_format="png16")
    assert result["rendered"] == len(views), result
    log.append(check_masks(layout, layout, ray_casts, "overwrite, png16"))

    # 4. the right hand requested only (the left posed from the annotations), in another folder
    right = annotate(tiny, "right", tmp_path / "right")
    assert not right.layout.vertices("left", right.layout.read_frames()[0]).exists()
    result = render(renderer, right, render_workers=1, depth_format="none",
                    meanwhile=lambda: ray_casts.warm(right.layout, all_views(right.layout) - all_views(layout)))
    assert result["rendered"] == len(all_views(right.layout)), result
    log += check_one_hand_requested(right.layout, layout, ray_casts)

    total = {k: sum(t[k] for t in log) for k in log[0]}
    assert total["hand_pixels"] > 10000
    print(f"{platform}: {total}")


def test_osmesa_crops_are_whole_image_renders(tiny, child, tmp_path):
    """gl_renderer: 'a crop gives the result of a full-size render': masks byte for byte and depth
    bit for bit, on the same backend (OSMesa draws crops by default)."""
    renderer = child("osmesa")
    layout = annotate(tiny).layout
    two_sizes(layout)
    order = [(f, c) for f in layout.read_frames() for c in layout.read_cams()]
    out = {}
    for crops in (None, False):
        path = tmp_path / f"crops-{crops}.npz"
        reply = renderer(op="views", root=str(layout.root), mano_dir=str(tiny / "mano"), crops=crops, order=order,
                         out=str(path))
        out[reply["crops"]] = np.load(path)
    assert set(out) == {True, False}, "OSMesa should draw crops by default"
    differences, mask_pixels, depth_pixels, max_depth, only_one = [], 0, 0, 0.0, 0
    for frame, cam in order:
        key = f"{cam}_{frame}"
        crop_mask, whole_mask = out[True][f"mask_{key}"], out[False][f"mask_{key}"]
        crop_depth, whole_depth = out[True][f"depth_{key}"], out[False][f"depth_{key}"]
        assert crop_mask.shape == whole_mask.shape and crop_depth.shape == whole_depth.shape
        masks = crop_mask != whole_mask
        depths = crop_depth != whole_depth
        if masks.any() or depths.any():
            covered = (crop_depth > 0) & (whole_depth > 0)
            step = float(np.abs(crop_depth - whole_depth)[covered].max()) if covered.any() else 0.0
            mask_pixels += int(masks.sum())
            depth_pixels += int(depths.sum())
            max_depth = max(max_depth, step)
            only_one += int(((crop_depth > 0) != (whole_depth > 0)).sum())
            where = f" at (y, x) {np.argwhere(masks)[:3].tolist()}" if masks.any() else ""
            differences.append(f"cam{cam} frame {frame}: masks differ on {int(masks.sum())} pixel(s){where}, depth on "
                               f"{int(depths.sum())} of {int(covered.sum())} covered pixels by up to {step:.2g} m")
    assert not differences, (
        f"{len(differences)} of {len(order)} views differ between crops and whole images: masks on {mask_pixels} "
        f"pixel(s), depth on {depth_pixels} pixels (max {max_depth:.2g} m where both cover the pixel; "
        f"{only_one} pixels covered in one only)\n" + "\n".join(differences[:12]))


@pytest.mark.slow
@pytest.mark.parametrize("platform", ["osmesa", "egl"])
def test_many_reruns_many_views_long(platform, tmp_path, helpers, child):
    """The long variant: 10 cameras (8 portrait, 2 landscape) x 11 two-hand frames at 1/4 size (a
    twelfth frame without a left hand for the right-hand-only run), a fresh run in one process,
    then rounds of partial reruns (deleted masks, a moved hand, a changed camera) with 1, 2 and 3
    workers, and per round damaged masks and a full --overwrite with the depth format switched;
    last the right hand only in 2 workers: 1,758 view checks a platform. INTERHAND_PREP_STRESS=1
    to run it (~3 min for both platforms on 2 cores; INTERHAND_PREP_STRESS_ROUNDS, default 6, and
    INTERHAND_PREP_STRESS_SEED)."""
    if os.environ.get("INTERHAND_PREP_STRESS") != "1":
        pytest.skip("the long stress variant runs only with INTERHAND_PREP_STRESS=1")
    from interhand_prep.synthetic.capture import CaptureSpec, SequenceSpec, generate_capture

    renderer = child(platform)
    root = tmp_path / "capture"
    cameras = ["400002", "400004", "400016", "400029", "400412", "410210", "410214", "410219", "410236", "400015"]
    generate_capture(root / "IH", root / "mano", CaptureSpec(
        capture=0, seed=23, camera_ids=cameras, image_scale=0.25, default_cases=False,
        sequences=[SequenceSpec(SEQ, "both", 12)], null_mano={SEQ: {5: ["left"]}}))
    ray_casts = RayCasts(helpers, root / "mano")
    rng = random.Random(int(os.environ.get("INTERHAND_PREP_STRESS_SEED", "1")))
    rounds = int(os.environ.get("INTERHAND_PREP_STRESS_ROUNDS", "6"))
    log = []
    sel = annotate(root)
    layout = sel.layout
    two_sizes(layout)
    result = render(renderer, sel, render_workers=1, meanwhile=lambda: ray_casts.warm(layout))
    assert result["rendered"] == len(all_views(layout))
    log.append(check_masks(layout, layout, ray_casts, "fresh run"))
    formats = ["png16", "npy", "none"]
    depth_format = "npy"
    for cycle in range(1, rounds + 1):
        rerun_cycle(renderer, sel, ray_casts, rng, cycle, ([2, 3, 1][cycle % 3], [1, 2, 3][cycle % 3]), log,
                    depth_format)
        depth_format = formats[cycle % 3]
        for cam, frame in rng.sample(sorted(all_views(layout)), 3):
            swap_labels(layout.mask(cam, frame))
        result = render(renderer, annotate(root).replace(overwrite=True), render_workers=[2, 1, 3][cycle % 3],
                        depth_format=depth_format, meanwhile=lambda: ray_casts.warm(layout))
        assert result["rendered"] == len(all_views(layout)), result
        log.append(check_masks(layout, layout, ray_casts, f"cycle {cycle} overwrite"))
    right = annotate(root, "right", tmp_path / "right")
    render(renderer, right, render_workers=2)
    log += check_one_hand_requested(right.layout, layout, ray_casts)
    total = {k: sum(t[k] for t in log) for k in log[0]}
    print(f"{platform}: {total}")
