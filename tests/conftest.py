"""Shared test data and helpers, as fixtures (test modules import only from the package).

- `fixtures_dir`: the real data in ../shared/fixtures (read-only).
- `synthetic_root` / `capture`: a small capture holding every filtering case (SMALL_SPEC), generated
  once; `capture` is a private copy a test may write into.
- `tiny_root` / `tiny`: a right-hand and a two-hand sequence, 4 cameras x 6 frames at 1/4 size.
- `gl_platform`: a working offscreen OpenGL platform (tests using it are marked `gl`).
- `helpers`: small functions over processed folders (run all stages, list outputs, run a script,
  ray-cast the hands of a view: the independent answer that rendered masks are checked against).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from interhand_prep.core.manifest import MANIFEST_NAME
from interhand_prep.core.selection import SequenceSelector
from interhand_prep.synthetic.capture import CaptureSpec, SequenceSpec, generate_capture

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
ONE, TWO = "0051_dinosaur", "0266_dh_pray"

# One capture holding every filtering case; the tests derive what must be kept from this spec.
SMALL_SPEC = dict(
    capture=0, split="train", seed=3,
    camera_ids=["400002", "400004", "400016", "400029", "410210", "410214", "410219", "400412"],
    sequences=[SequenceSpec(ONE, "right", 8), SequenceSpec(TWO, "both", 8)],
    black={ONE: {2: ["400004"]}, TWO: {5: ["400002", "400016"]}},
    null_mano={TWO: {3: ["left"], 6: ["right"]}},
    missing_images={ONE: {4: ["410214"]}, TWO: {1: ["400029"]}},
    cameras_without_images=["410210"],
    default_cases=False,
)
# cameras.csv: 400002/400004/400016/400029 portrait RGB, 410214/410219 portrait mono,
# 400412 landscape RGB, 410210 landscape mono (it gets no images here)
TINY_CAMERAS = ["400002", "400016", "410214", "400412"]  # two portrait RGB, one portrait mono, one landscape


def pytest_configure(config):
    # the GL platform verdicts of this session (its subprocesses too) go to a cache of its own
    os.environ["XDG_CACHE_HOME"] = str(Path(config.rootpath if hasattr(config, "rootpath") else REPO) / ".pytest_cache"
                                       / "xdg")


def pytest_collection_modifyitems(items):
    for item in items:  # every test that renders needs an OpenGL platform
        if "gl_platform" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.gl)


def small_spec() -> CaptureSpec:
    return CaptureSpec(**{k: (v.copy() if isinstance(v, (dict, list)) else v) for k, v in SMALL_SPEC.items()})


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        if os.environ.get("CI"):  # CI always has shared/ beside the clone: never skip silently there
            pytest.fail(f"shared fixtures not found at {FIXTURES}")
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def small() -> SimpleNamespace:
    """SMALL_SPEC and the frame ids the generator gives its sequences (consecutive, 37 apart)."""
    frames, start = {}, 1
    for s in SMALL_SPEC["sequences"]:
        frames[s.name] = list(range(start, start + s.num_frames))
        start += s.num_frames + 37
    return SimpleNamespace(spec=SMALL_SPEC, frames=frames)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic capture and model, generated once: root/IH (basedir) and root/mano."""
    return _generated_once(tmp_path_factory, "synthetic", small_spec())


def _generated_once(tmp_path_factory, name: str, spec: CaptureSpec) -> Path:
    """root/IH and root/mano of `spec`, generated once per test session, also when pytest-xdist runs
    the session in several processes: the first to ask generates it under a lock in the folder the
    processes share, the others wait and use it (read-only; tests copy what they write into)."""
    import fcntl

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # this session's folder, above each process's own
    root = base / f"generated-{name}"
    base.mkdir(parents=True, exist_ok=True)
    with open(base / f"generated-{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "complete").is_file():
            shutil.rmtree(root, ignore_errors=True)
            generate_capture(root / "IH", root / "mano", spec)
            (root / "complete").touch()
    return root


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source / "IH", target / "IH", symlinks=True)
    shutil.copytree(source / "mano", target / "mano")
    return target


@pytest.fixture
def capture(synthetic_root, tmp_path) -> Path:
    """A private copy of the synthetic tree (tests may write into it): tmp/IH and tmp/mano."""
    return _copy(synthetic_root, tmp_path)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A right-hand and a two-hand sequence, 4 cameras x 6 frames at 1/4 size, one null left hand."""
    spec = CaptureSpec(capture=0, seed=8, camera_ids=TINY_CAMERAS, image_scale=0.25, default_cases=False,
                       sequences=[SequenceSpec(ONE, "right", 6), SequenceSpec(TWO, "both", 6)],
                       null_mano={TWO: {2: ["left"]}})
    return _generated_once(tmp_path_factory, "tiny", spec)


@pytest.fixture
def tiny(tiny_root, tmp_path) -> Path:
    return _copy(tiny_root, tmp_path)


@pytest.fixture(scope="session")
def processed_two_hands(tiny_root, tmp_path_factory, gl_platform) -> SequenceSelector:
    """The tiny two-hand sequence processed with both hands (every stage), once per session, in a
    copy of its own: for tests that only read it and write exports."""
    from interhand_prep.stages.pipeline import StageOptions, run_sequence

    root = _copy(tiny_root, tmp_path_factory.mktemp("processed_two_hands"))
    sel = _selector(root, TWO, hand_type="both")
    opts = StageOptions()
    opts = dataclasses.replace(opts, render=dataclasses.replace(opts.render, backend=gl_platform, render_workers=1))
    report = run_sequence(sel, opts, log=lambda m: None)
    assert report.ok, report.stages
    return sel


# A sitecustomize.py for the processes of whole commands (their workers, Slurm tasks) that have its
# folder first on PYTHONPATH: every view's render sleeps $SLOW_RENDER_SECONDS, and where
# $SLOW_RENDER_HOLD names a file, each process renders $SLOW_RENDER_FREE views and then waits while
# that file exists. A test holds a run at a known point (signals it, runs another command beside
# it) and lets it go by deleting the file: no race with a run that would otherwise have finished.
SLOW_RENDER = """
import os, time
delay = float(os.environ.get("SLOW_RENDER_SECONDS", "0"))
hold = os.environ.get("SLOW_RENDER_HOLD")
free = int(os.environ.get("SLOW_RENDER_FREE", "0"))
if delay or hold:
    import interhand_prep.core.gl_renderer as rendering
    original = rendering.HandViewRenderer.render
    rendered = [0]

    def slow(self, cam_id):
        rendered[0] += 1
        while hold and rendered[0] > free and os.path.exists(hold):
            time.sleep(0.01)
        time.sleep(delay)
        return original(self, cam_id)

    rendering.HandViewRenderer.render = slow
"""


@pytest.fixture(scope="session")
def slow_render_hooks(tmp_path_factory) -> Path:
    """A folder holding the SLOW_RENDER sitecustomize.py (put it first on a subprocess's PYTHONPATH)."""
    folder = tmp_path_factory.mktemp("hooks")
    (folder / "sitecustomize.py").write_text(SLOW_RENDER)
    return folder


@pytest.fixture(scope="session")
def smplx_reference():
    """(torch, smplx): the reference MANO implementation, from the `reference` extra. Without it the
    tests that compare with it skip and say how to enable them; CI installs it, so there they fail."""
    try:
        import smplx
        import torch
    except ImportError as exc:
        message = f"needs smplx and torch: python -m pip install -e '.[reference]' ({exc})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return torch, smplx


@pytest.fixture(scope="session")
def gl_platform() -> str:
    """A working offscreen OpenGL platform, or skip (fail under CI, which installs Mesa)."""
    from interhand_prep.core import gl_platform

    reasons = {p: gl_platform.verdict(p)[0] for p in ("egl", "osmesa")}
    working = [p for p, r in reasons.items() if r is None]
    if not working:
        message = f"no OpenGL platform: {reasons}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return working[0]


# ---------------------------------------------------------------------------------------------
# helpers


def _selector(root: Path, seq: str = TWO, **kw) -> SequenceSelector:
    return SequenceSelector(capture=0, seq=seq, basedir=root / "IH", mano_dir=root / "mano", **kw)


def _output_files(root: Path) -> dict[str, bytes]:
    """Every output file of a sequence folder by relative path (the images and manifest aside)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if not d.startswith("cam")]
        for name in filenames:
            if rel_dir == Path(".") and name == MANIFEST_NAME:
                continue
            out[str(rel_dir / name)] = (Path(dirpath) / name).read_bytes()
    return out


def _state(root: Path) -> dict[str, tuple]:
    """Bytes, modification time and mode of every file under `root`, hidden ones included."""
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            out[str(path.relative_to(root))] = (hashlib.md5(path.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_mode)
    return out


def _script(name: str, *args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """A top-level script of the repository (or process.sh) as a user runs it."""
    cmd = ["bash", str(REPO / name)] if name.endswith(".sh") else [sys.executable, str(REPO / name)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, cwd=cwd, stdin=subprocess.DEVNULL,
                          env=dict(os.environ, PYTHON=sys.executable, **(env or {})))


def _assert_processed_sequence(root: Path, hands: tuple[str, ...], mano_dir: Path) -> None:
    """Load a processed (or merged) sequence folder the way a trainer does, and check it."""
    from PIL import Image

    from interhand_prep.core import mano, mano_forward
    from interhand_prep.core.layout import SequenceLayout

    layout = SequenceLayout(root)
    annots = np.load(root / "annots.npy", allow_pickle=True).item()
    cams = [line for line in (root / "cams.txt").read_text().split()]
    frames = [int(f) for f in (root / "frames.txt").read_text().split()]
    assert frames == sorted(frames) and len(set(frames)) == len(frames)
    assert list(annots["cams"]["K"]) == cams and len(annots["ims"]) == len(frames)
    for frame, entry in zip(frames, annots["ims"]):
        assert entry["ims"] == [f"cam{c}/image{frame:04d}.jpg" for c in cams]
        for rel in entry["ims"]:
            image = Image.open(root / rel)
            mask = np.asarray(Image.open((root / "mask" / rel).with_suffix(".png")))
            depth = np.load((root / "depth" / rel).with_suffix(".npy"))
            assert mask.shape == image.size[::-1] and depth.shape == mask.shape + (1,)
            assert ((mask > 0) == (depth[..., 0] > 0)).all()
    for hand in hands:
        model = mano.load_mano_model(mano_dir, hand)
        lbs = layout.lbs_dir(hand)
        for name in ("faces", "parents", "weights", "joints", "tvertices", "tbw"):
            assert (lbs / f"{name}.npy").is_file()
        tpose = np.load(layout.tpose_params(hand), allow_pickle=True).item()
        assert tpose["Rh"].shape == (1, 3)
        for frame in frames:
            params = np.load(layout.params(hand, frame), allow_pickle=True).item()
            vertices = np.load(layout.vertices(hand, frame))
            assert vertices.shape == (model.num_vertices, 3)
            unposed = (vertices - params["Th"]) @ mano_forward.axis_angle_to_matrix(params["Rh"])[0]
            assert np.abs(unposed).max() < 0.5  # pose space: the hand about the origin
            assert np.load(layout.bweights(hand, frame)).shape[-1] == 17
            assert np.load(layout.bs(hand, frame)).shape[-1] == 3


RAY_CAST_TILE = 8


def _ray_cast(layout, mano_dir, cam: str, frame: int, width: int, height: int, meshes: dict | None = None,
              with_faces: bool = False):
    """Per pixel centre: the nearest ray-triangle hit over all faces of both hands (Moller-Trumbore).

    -> label (H, W) uint8 (0, 100 left, 200 right), depth (H, W) z in metres (0 = no hit),
       and per hand a boolean (H, W) of pixels whose ray hits that hand at all; with `with_faces`
       also face (H, W) int64: the index of the nearest face among its hand's faces (-1 = no hit).
    The hands are vertices/<hand>/<frame>.npy of `layout` with the faces of the models in
    `mano_dir`, or `meshes` {hand: (vertices Vx3 world metres, faces Fx3)} when given.
    The image is cast in tiles of RAY_CAST_TILE x RAY_CAST_TILE pixels, each against the triangles
    whose projected bounding box (with a pixel of margin) reaches the tile: a ray through a pixel
    centre outside a triangle's projection cannot hit it (every vertex is in front of the camera,
    checked), so the result is that of casting every ray against every triangle.
    """
    from interhand_prep.core.mano import load_mano_model

    cams = layout.read_cameras()
    c = cams.ids.index(cam)
    K, R, T = cams.K[c], cams.R[c], cams.T[c] / 1000.0
    origin = -R.T @ T
    if meshes is None:
        meshes = {hand: (np.load(layout.vertices(hand, frame)), load_mano_model(mano_dir, hand).faces)
                  for hand in ("left", "right")}
    tris, labels, face_ids = [], [], []
    for hand, label in (("left", 100), ("right", 200)):
        if hand not in meshes:
            continue
        v, f = meshes[hand]
        v = np.asarray(v, dtype=np.float64)
        tris.append(v[np.asarray(f)])
        labels.append(np.full(len(f), label))
        face_ids.append(np.arange(len(f)))
    label_image = np.zeros((height, width), np.uint8)
    depth = np.zeros((height, width))
    face_image = np.full((height, width), -1, np.int64)
    hits_hand = {100: np.zeros((height, width), bool), 200: np.zeros((height, width), bool)}
    if not tris:
        return (label_image, depth, hits_hand, face_image) if with_faces else (label_image, depth, hits_hand)
    tris, labels, face_ids = np.concatenate(tris), np.concatenate(labels), np.concatenate(face_ids)
    corners_cam = tris @ R.T + T
    assert (corners_cam[..., 2] > 0).all()
    corners_px = corners_cam[..., :2] / corners_cam[..., 2:] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    lo, hi = corners_px.min(1) - 1.0, corners_px.max(1) + 1.0
    tile = RAY_CAST_TILE
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            x1, y1 = min(x0 + tile, width), min(y0 + tile, height)
            near = (lo[:, 0] <= x1 - 1) & (hi[:, 0] >= x0) & (lo[:, 1] <= y1 - 1) & (hi[:, 1] >= y0)
            if not near.any():
                continue
            tri, lab, fid = tris[near], labels[near], face_ids[near]
            v0, e1, e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
            u, w = np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
            rays_cam = np.stack([(u - K[0, 2]) / K[0, 0], (w - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
            d = (rays_cam @ R)[:, None, :]  # world directions with camera z = 1: the hit distance t is the z-depth
            p = np.cross(d, e2[None])
            det = (e1[None] * p).sum(-1)
            with np.errstate(divide="ignore", invalid="ignore"):
                inv = 1.0 / det
                s = origin - v0
                bu = (s[None] * p).sum(-1) * inv
                q = np.cross(s, e1)
                bv = (d * q[None]).sum(-1) * inv
                t = (e2 * q).sum(-1)[None] * inv
            hit = (np.abs(det) > 1e-15) & (bu >= 0) & (bv >= 0) & (bu + bv <= 1) & (t > 0)
            t = np.where(hit, t, np.inf)
            k = t.argmin(1)
            tk = t[np.arange(len(k)), k]
            shape = (y1 - y0, x1 - x0)
            label_image[y0:y1, x0:x1] = np.where(np.isfinite(tk), lab[k], 0).reshape(shape)
            depth[y0:y1, x0:x1] = np.where(np.isfinite(tk), tk, 0.0).reshape(shape)
            face_image[y0:y1, x0:x1] = np.where(np.isfinite(tk), fid[k], -1).reshape(shape)
            for value in (100, 200):
                hits_hand[value][y0:y1, x0:x1] = hit[:, lab == value].any(1).reshape(shape)
    return (label_image, depth, hits_hand, face_image) if with_faces else (label_image, depth, hits_hand)


@pytest.fixture
def helpers(request) -> SimpleNamespace:
    """selector, run_stages (all stages in-process, one render worker), output_files, state,
    script, assert_processed_sequence, copy_capture (a private copy of a generated capture),
    ray_cast (the CPU ray cast of a view's hands, `_ray_cast`)."""

    def run_stages(sel: SequenceSelector, opts=None):
        from interhand_prep.stages import pipeline

        platform = request.getfixturevalue("gl_platform")
        opts = opts or pipeline.StageOptions()
        render = dataclasses.replace(opts.render, backend=platform, render_workers=1)
        report = pipeline.run_sequence(sel, dataclasses.replace(opts, render=render), log=lambda m: None)
        assert report.ok, report.stages
        return report

    return SimpleNamespace(selector=_selector, run_stages=run_stages, output_files=_output_files, state=_state,
                           script=_script, assert_processed_sequence=_assert_processed_sequence, copy_capture=_copy,
                           ray_cast=_ray_cast)
