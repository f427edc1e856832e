"""Cameras in the file formats of other trainers, as pure functions from arrays to file contents.

Each trainer has its own conventions, and a conversion by hand is where they go wrong:

nerfstudio (transforms.json, read by its `nerfstudio-data` parser):
    camera-to-world 4x4 with OpenGL camera axes (x right, y up, z back), in metres; pinhole
    intrinsics per view (`fl_x fl_y cx cy w h`, camera_model OPENCV, distortion k1 k2 p1 p2).
    nerfstudio casts the ray of pixel (i, j) through (i + 0.5, j + 0.5): pixel centres at +0.5,
    where InterHand2.6M's (OpenCV's) are at integers, so cx and cy are written + 0.5.
EasyMocap / EasyVolcap (intri.yml, extri.yml in OpenCV FileStorage YAML):
    world-to-camera with OpenCV axes: `Rot_<id>` (3x3), `R_<id>` its Rodrigues vector (3x1, the
    one EasyMocap reads), `T_<id>` (3x1, metres); `K_<id>` with OpenCV's pixel centres (as given),
    `dist_<id>` (1x5).

Input cameras are a CameraSet in the InterHand2.6M convention (see cameras.py): T in millimetres.
"""

from __future__ import annotations

import json
from typing import Callable, Sequence

import numpy as np

from .cameras import CameraSet, camera_to_world, opencv_to_opengl, rotation_vectors

MM_PER_M = 1000.0
# the pixel-centre shift from OpenCV's convention (centres at integers) to nerfstudio's (at +0.5)
NERFSTUDIO_PIXEL_OFFSET = 0.5


def nerfstudio_camera_to_world(cameras: CameraSet) -> np.ndarray:
    """-> Cx4x4 camera-to-world transforms in metres with OpenGL camera axes (nerfstudio's)."""
    return opencv_to_opengl(camera_to_world(cameras.R, cameras.T / MM_PER_M))


def nerfstudio_transforms(cameras: CameraSet, sizes: Sequence[tuple[int, int]], frames: Sequence[int],
                          files: Callable[[str, int], dict[str, str]]) -> dict:
    """The content of transforms.json: one entry per view (camera-major, as nerfstudio sorts them).

    cameras : C cameras, sizes : C (width, height) px, frames : F frame ids,
    files(cam, frame) -> {"file_path": ..., "mask_path": ..., ["depth_file_path": ...]}, relative
    to the folder of transforms.json. Each entry also carries `camera` and `frame` (ignored by
    nerfstudio, used by dynamic-scene trainers).
    """
    c2w = nerfstudio_camera_to_world(cameras)
    views = []
    for c, cam in enumerate(cameras.ids):
        K = cameras.K[c]
        intrinsics = {"fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]),
                      "cx": float(K[0, 2]) + NERFSTUDIO_PIXEL_OFFSET, "cy": float(K[1, 2]) + NERFSTUDIO_PIXEL_OFFSET,
                      "w": int(sizes[c][0]), "h": int(sizes[c][1]), "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0}
        pose = c2w[c].tolist()
        for frame in frames:
            views.append({**files(cam, frame), "transform_matrix": pose, **intrinsics,
                          "camera": cam, "frame": int(frame)})
    return {"camera_model": "OPENCV", "frames": views}


def transforms_text(transforms: dict) -> str:
    """transforms.json's text: one line per view, so the file stays readable and diffable."""
    head = {k: v for k, v in transforms.items() if k != "frames"}
    lines = [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    views = ",\n".join(f"  {json.dumps(view)}" for view in transforms["frames"])
    return "{\n" + "\n".join(lines) + '\n "frames": [\n' + views + "\n ]\n}\n"


def _yaml_number(value: float) -> str:
    return repr(float(value))  # the shortest text that reads back to the same float64


def opencv_yaml(entries: Sequence[tuple[str, object]]) -> str:
    """OpenCV FileStorage YAML (what cv2.FileStorage reads) of (key, value) pairs: a 2-D array
    becomes a `!!opencv-matrix` of doubles, a list of strings a sequence, an int a scalar."""
    lines = ["%YAML:1.0", "---"]
    for key, value in entries:
        if isinstance(value, np.ndarray):
            matrix = np.asarray(value, dtype=np.float64)
            if matrix.ndim != 2:
                raise ValueError(f"{key}: a FileStorage matrix is 2-D, got shape {matrix.shape}")
            lines += [f"{key}: !!opencv-matrix", f"   rows: {matrix.shape[0]}", f"   cols: {matrix.shape[1]}",
                      "   dt: d", f"   data: [ {', '.join(_yaml_number(v) for v in matrix.ravel())} ]"]
        elif isinstance(value, (list, tuple)):
            lines.append(f"{key}:")
            lines += [f'   - "{item}"' for item in value]
        elif isinstance(value, (int, np.integer)):
            lines.append(f"{key}: {int(value)}")
        else:
            raise TypeError(f"{key}: no FileStorage form for {type(value).__name__}")
    return "\n".join(lines) + "\n"


def easymocap_intri(cameras: CameraSet, sizes: Sequence[tuple[int, int]]) -> str:
    """intri.yml: names, then per camera K_<id> (3x3 px), dist_<id> (1x5 zeros), H_<id> and W_<id>."""
    entries: list[tuple[str, object]] = [("names", list(cameras.ids))]
    for c, cam in enumerate(cameras.ids):
        entries += [(f"K_{cam}", cameras.K[c]), (f"dist_{cam}", np.zeros((1, 5))),
                    (f"H_{cam}", int(sizes[c][1])), (f"W_{cam}", int(sizes[c][0]))]
    return opencv_yaml(entries)


def easymocap_extri(cameras: CameraSet) -> str:
    """extri.yml: names, then per camera R_<id> (3x1 Rodrigues), Rot_<id> (3x3), T_<id> (3x1 m),
    world to camera: X_cam = Rot @ X_world + T, in metres."""
    rvecs = rotation_vectors(cameras.R)
    entries: list[tuple[str, object]] = [("names", list(cameras.ids))]
    for c, cam in enumerate(cameras.ids):
        entries += [(f"R_{cam}", rvecs[c].reshape(3, 1)), (f"Rot_{cam}", cameras.R[c]),
                    (f"T_{cam}", (cameras.T[c] / MM_PER_M).reshape(3, 1))]
    return opencv_yaml(entries)
