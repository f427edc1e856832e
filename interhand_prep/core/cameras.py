"""Cameras in the InterHand2.6M convention, as batched pure functions over arrays.

Convention (OpenCV pinhole, no distortion), for a world point X in millimetres:

    X_cam = R @ X + T,   with R = camrot and T = -camrot @ campos   (millimetres)
    pixel = (fx * X_cam[0] / X_cam[2] + cx,  fy * X_cam[1] / X_cam[2] + cy)

Integer pixel coordinates are pixel centres; x to the right, y down, z forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .errors import InputError


def intrinsics_matrix(focal: np.ndarray, princpt: np.ndarray) -> np.ndarray:
    """focal : Cx2 (fx, fy) px, princpt : Cx2 (cx, cy) px  ->  K : Cx3x3."""
    focal = np.asarray(focal, dtype=np.float64)
    princpt = np.asarray(princpt, dtype=np.float64)
    K = np.zeros(focal.shape[:-1] + (3, 3))
    K[..., 0, 0] = focal[..., 0]
    K[..., 1, 1] = focal[..., 1]
    K[..., 0, 2] = princpt[..., 0]
    K[..., 1, 2] = princpt[..., 1]
    K[..., 2, 2] = 1.0
    return K


def translation_from_position(R: np.ndarray, campos: np.ndarray) -> np.ndarray:
    """R : Cx3x3 world-to-camera rotation, campos : Cx3 camera centre (mm)  ->  T : Cx3 (mm)."""
    return -np.einsum("cij,cj->ci", R, campos)


def world_to_camera(points: np.ndarray, R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """points : Px3 world (mm), R : Cx3x3, T : Cx3 or Cx3x1 (mm)  ->  CxPx3 camera coords (mm)."""
    T = np.asarray(T).reshape(len(R), 1, 3)
    return np.einsum("cij,pj->cpi", R, points) + T


def project(points_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """points_cam : CxPx3 camera coords, K : Cx3x3  ->  CxPx2 pixel coords (x right, y down)."""
    z = points_cam[..., 2:3]
    xy = points_cam[..., :2] / z
    f = np.stack([K[:, 0, 0], K[:, 1, 1]], axis=-1)[:, None, :]
    c = np.stack([K[:, 0, 2], K[:, 1, 2]], axis=-1)[:, None, :]
    return xy * f + c


def camera_to_world(R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """R : Cx3x3 world-to-camera rotation, T : Cx3 or Cx3x1  ->  Cx4x4 camera-to-world transforms
    [R^T | -R^T T] in T's unit; the camera axes stay OpenCV's (x right, y down, z forward)."""
    R = np.asarray(R, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64).reshape(len(R), 3)
    c2w = np.zeros((len(R), 4, 4))
    c2w[:, :3, :3] = np.swapaxes(R, 1, 2)
    c2w[:, :3, 3] = -np.einsum("cji,cj->ci", R, T)
    c2w[:, 3, 3] = 1.0
    return c2w


# OpenCV camera axes (x right, y down, z forward) -> OpenGL's (x right, y up, z back): the y and z
# columns of a camera-to-world rotation change sign.
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])


def opencv_to_opengl(c2w: np.ndarray) -> np.ndarray:
    """Cx4x4 camera-to-world with OpenCV camera axes  ->  the same cameras with OpenGL axes."""
    return np.asarray(c2w) @ OPENCV_TO_OPENGL


def rotation_vectors(R: np.ndarray) -> np.ndarray:
    """Cx3x3 rotation matrices  ->  Cx3 axis-angle (Rodrigues) vectors, radians. A matrix that is
    not exactly orthonormal (float noise of the dataset's JSON) gives the nearest rotation's vector."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_rotvec()


def look_at_rotation(position: np.ndarray, target: np.ndarray, down: np.ndarray) -> np.ndarray:
    """World-to-camera rotations of cameras at `position` looking at `target`.

    position, target : Cx3, down : Cx3 (a world direction that should point down the image)
    -> R : Cx3x3 whose rows are the camera x (right), y (down), z (forward) axes in world.
    """
    z = target - position
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    y = down - np.sum(down * z, axis=-1, keepdims=True) * z
    y = y / np.linalg.norm(y, axis=-1, keepdims=True)
    x = np.cross(y, z)
    return np.stack([x, y, z], axis=-2)


@dataclass
class CameraSet:
    """C cameras of one capture in the convention of this module.

    ids : C camera ids as strings ("400002"), K : Cx3x3 (px), R : Cx3x3, T : Cx3 (mm).
    """

    ids: list[str]
    K: np.ndarray
    R: np.ndarray
    T: np.ndarray

    @classmethod
    def from_interhand(cls, entry: Mapping, ids: Sequence[str] | None = None, source: str = "camera.json") -> "CameraSet":
        """Build from one capture's record of InterHand2.6M_<split>_camera.json.

        entry = {"campos": {id: [3]}, "camrot": {id: 3x3}, "focal": {id: [2]}, "princpt": {id: [2]}}.
        `ids` selects and orders cameras (default: all, sorted numerically).
        """
        try:
            fields = {key: entry[key] for key in ("campos", "camrot", "focal", "princpt")}
        except (KeyError, TypeError) as exc:
            raise InputError(f"{source}: camera record lacks {exc}") from None
        if ids is None:
            ids = sorted(fields["campos"], key=int)
        ids = [str(i) for i in ids]
        missing = [i for i in ids if any(i not in fields[k] for k in fields)]
        if missing:
            raise InputError(f"{source}: no camera parameters for camera(s) {', '.join(missing)}")
        try:
            campos = np.array([fields["campos"][i] for i in ids], dtype=np.float64).reshape(-1, 3)
            R = np.array([fields["camrot"][i] for i in ids], dtype=np.float64).reshape(-1, 3, 3)
            focal = np.array([fields["focal"][i] for i in ids], dtype=np.float64).reshape(-1, 2)
            princpt = np.array([fields["princpt"][i] for i in ids], dtype=np.float64).reshape(-1, 2)
        except (ValueError, TypeError) as exc:
            raise InputError(f"{source}: malformed camera parameters ({exc})") from None
        if not (np.isfinite(campos).all() and np.isfinite(R).all() and np.isfinite(focal).all()):
            raise InputError(f"{source}: camera parameters contain NaN or infinity")
        return cls(ids=ids, K=intrinsics_matrix(focal, princpt), R=R, T=translation_from_position(R, campos))

    def subset(self, ids: Sequence[str]) -> "CameraSet":
        index = [self.ids.index(str(i)) for i in ids]
        return CameraSet([self.ids[i] for i in index], self.K[index], self.R[index], self.T[index])

    @property
    def centers(self) -> np.ndarray:
        """Cx3 camera centres in world coordinates (mm)."""
        return -np.einsum("cji,cj->ci", self.R, self.T)

    def project(self, points_world_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """points_world_mm : Px3  ->  (pixels CxPx2, depth CxP in mm)."""
        cam = world_to_camera(points_world_mm, self.R, self.T)
        return project(cam, self.K), cam[..., 2]
