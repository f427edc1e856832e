"""Offscreen rendering of hand masks and depth maps with pyrender (EGL or OSMesa).

This is the only module that picks the OpenGL platform: `select_platform` sets PYOPENGL_PLATFORM
before pyrender is first imported, and pyrender is imported lazily inside `HandViewRenderer`.

Outputs per view (H x W of that camera's images):
    mask   uint8 (H, W): 0 background, 100 where the nearest surface is the left hand, 200 right
    depth  float32 (H, W): z of the nearest hand surface in the camera frame (metres), 0 = no hand
Pixels are sampled at their centres (multisampling off), the InterHand2.6M / OpenCV convention.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np

from . import pyrender_adapter
from .errors import InputError
from .layout import MASK_LABELS
from .options import BACKENDS

log = logging.getLogger(__name__)

Z_NEAR, Z_FAR = 0.01, 20.0  # metres; a 24-bit depth buffer then resolves ~6 micrometres at 1 m
# OpenCV camera (x right, y down, z forward) to OpenGL camera (x right, y up, z backward)
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])

_PROBE = """
import os, sys
os.environ["PYOPENGL_PLATFORM"] = sys.argv[1]
import pyrender
r = pyrender.OffscreenRenderer(8, 8)
r.delete()
"""


@functools.lru_cache(maxsize=None)
def probe_platform(platform: str) -> str | None:
    """Try to create an offscreen context on `platform` in a subprocess; None if it works, else why
    (once per process)."""
    env = dict(os.environ, PYOPENGL_PLATFORM=platform)
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE, platform], env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "timed out creating a context"
    if proc.returncode == 0:
        return None
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {proc.returncode}"


def select_platform(backend: str) -> str:
    """Resolve `backend` ('auto', 'egl', 'osmesa') to a working platform and set PYOPENGL_PLATFORM.

    auto: EGL when an EGL device works (NVIDIA, or Mesa's software device), else OSMesa.
    Worker processes started afterwards inherit the choice; this process can render only if it
    has not imported pyrender for another platform (see `can_render_here`).
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    candidates = ("egl", "osmesa") if backend == "auto" else (backend,)
    reasons = {}
    for platform in candidates:
        reason = probe_platform(platform)
        if reason is None:
            os.environ["PYOPENGL_PLATFORM"] = platform
            return platform
        reasons[platform] = reason
    detail = "; ".join(f"{p}: {r}" for p, r in reasons.items())
    raise InputError(f"no OpenGL platform for offscreen rendering ({detail}); install the system libraries "
                     "(Debian: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6) or pick --backend")


_imported_platform: str | None = None


def can_render_here(platform: str) -> bool:
    """Whether this process can render on `platform` (PyOpenGL fixes its platform at import)."""
    if "pyrender" not in sys.modules:
        return True
    return _imported_platform == platform


def camera_pose_opengl(R: np.ndarray, T_mm: np.ndarray) -> np.ndarray:
    """World-to-camera R (3x3) and T (3, mm) of OpenCV cameras -> 4x4 camera-to-world pose of the
    pyrender (OpenGL) camera in metres: inverse extrinsics composed with the axis flip."""
    pose = np.eye(4)
    pose[:3, :3] = R.T
    pose[:3, 3] = -R.T @ (np.asarray(T_mm, dtype=np.float64).reshape(3) / 1000.0)
    return pose @ OPENCV_TO_OPENGL


@dataclass(frozen=True)
class ViewCamera:
    """One camera as the renderer needs it: id, K (3x3 px), R (3x3), T (3, mm), image size."""

    cam_id: str
    K: np.ndarray
    R: np.ndarray
    T: np.ndarray
    width: int
    height: int


class HandViewRenderer:
    """Renders mask and depth of the current hand meshes from many cameras.

    One GL context per instance (create one per worker process): a single OffscreenRenderer,
    resized when the image size changes (render all views of one size before the next), and one
    Scene per image size. A frame's meshes are uploaded once per size and seen from every camera
    by switching the scene's camera node. (Several EGL renderers in one process share a display
    that pyrender terminates when the first is deleted, pyrender issues 148 and 223.)
    """

    def __init__(self, cameras: list[ViewCamera]):
        global _imported_platform
        platform = os.environ.get("PYOPENGL_PLATFORM")
        if not can_render_here(platform):
            raise RuntimeError(f"pyrender was imported here for {_imported_platform}, not {platform}")
        import pyrender

        _imported_platform = platform
        pyrender_adapter.stable_context_ids()

        self._pyrender = pyrender
        self._flags = pyrender.RenderFlags.SEG
        self._by_size: dict[tuple[int, int], dict] = {}
        self._renderer = None
        self.cameras = {c.cam_id: c for c in cameras}
        for cam in cameras:
            size = (cam.width, cam.height)
            if size not in self._by_size:
                self._by_size[size] = {"scene": pyrender.Scene(bg_color=(0, 0, 0, 0)), "nodes": {}, "hands": {}}
            entry = self._by_size[size]
            K = cam.K
            # pyrender puts pixel centres at +0.5, OpenCV at integers
            intrinsics = pyrender.IntrinsicsCamera(K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5, znear=Z_NEAR, zfar=Z_FAR)
            entry["nodes"][cam.cam_id] = entry["scene"].add(intrinsics, pose=camera_pose_opengl(cam.R, cam.T))
        first = next(iter(self._by_size))
        self._offscreen = pyrender.OffscreenRenderer(*first)
        self._size = None

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """Image sizes (width, height) of the cameras, each with its own scene and renderer."""
        return list(self._by_size)

    def cameras_of_size(self, size: tuple[int, int]) -> list[str]:
        return list(self._by_size[size]["nodes"])

    def set_hands(self, size: tuple[int, int], meshes: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Put the frame's hands into the scene of one image size; hands not given are removed.

        meshes: {hand: (vertices Vx3 world metres, faces Fx3)}.
        """
        pyrender = self._pyrender
        entry = self._by_size[size]
        scene = entry["scene"]
        for node in entry["hands"].values():
            scene.remove_node(node)  # the renderer frees the old buffers on its next render
        entry["hands"] = {}
        for hand, (vertices, faces) in meshes.items():
            # pyrender culls back faces in SEG mode whatever the flags say, and MANO is open at the
            # wrist (its inside is visible there), so every face is drawn with both windings.
            faces = np.asarray(faces, dtype=np.uint32)
            both_sides = np.concatenate([faces, faces[:, ::-1]])
            # a new mesh per frame: editing positions in place would not reach the GPU (pyrender #43)
            primitive = pyrender.Primitive(positions=np.asarray(vertices, dtype=np.float32),
                                           indices=both_sides, mode=pyrender.GLTF.TRIANGLES)
            entry["hands"][hand] = scene.add(pyrender.Mesh([primitive]))

    def render(self, cam_id: str) -> tuple[np.ndarray, np.ndarray]:
        """-> mask uint8 (H, W) with MASK_LABELS, depth float32 (H, W) metres (0 = no hand)."""
        cam = self.cameras[cam_id]
        size = (cam.width, cam.height)
        entry = self._by_size[size]
        scene = entry["scene"]
        scene.main_camera_node = entry["nodes"][cam_id]
        seg = {node: (MASK_LABELS[hand],) * 3 for hand, node in entry["hands"].items()}
        if size != self._size:  # made current once per image size, not per view
            pyrender_adapter.activate(self._offscreen, size)
            self._size = size
        color, depth = pyrender_adapter.draw(self._offscreen, scene, self._flags, seg, size)
        return np.ascontiguousarray(color[..., 0]), depth

    def close(self) -> None:
        if self._offscreen is not None:
            self._offscreen.delete()
            self._offscreen = None

    def __enter__(self) -> "HandViewRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
