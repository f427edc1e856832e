"""COLMAP sparse models (cameras.bin, images.bin, points3D.bin) as pure functions from arrays to
file contents, for the 3D Gaussian splatting trainers that read them.

COLMAP's conventions:
    world-to-camera rotation as a unit quaternion (qw, qx, qy, qz) and translation t (metres
    here), OpenCV camera axes (x right, y down, z forward): X_cam = R X_world + t;
    pixel centres at +0.5 (the centre of the top-left pixel is (0.5, 0.5)), where InterHand2.6M's
    (OpenCV's) are at integers, so cx, cy and every 2D point are written + 0.5;
    PINHOLE cameras (model id 1): fx, fy, cx, cy.
The binary layout is that of COLMAP's `src/colmap/scene/reconstruction_io.cc` (little endian):
    cameras.bin   uint64 count; per camera: int32 id, int32 model id, uint64 width, uint64 height,
                  float64 params
    images.bin    uint64 count; per image: int32 id, float64 qw qx qy qz, float64 tx ty tz,
                  int32 camera id, name (UTF-8, NUL-terminated), uint64 count of 2D points, per
                  point float64 x y and int64 the id of its 3D point (-1: none)
    points3D.bin  uint64 count; per point: uint64 id, float64 x y z, uint8 r g b, float64 error,
                  uint64 track length, per track element int32 image id and int32 2D point index
Input cameras are a CameraSet in the InterHand2.6M convention (cameras.py): T in millimetres.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .cameras import CameraSet

COLMAP_PIXEL_OFFSET = 0.5  # OpenCV pixel centres (integers) -> COLMAP's (+0.5)
PINHOLE = 1                # COLMAP's camera model id of fx, fy, cx, cy
MM_PER_M = 1000.0


def world_to_camera_quaternions(R: np.ndarray) -> np.ndarray:
    """Rotation matrices Cx3x3 -> unit quaternions Cx4 (qw, qx, qy, qz), qw >= 0 (COLMAP's order)."""
    from scipy.spatial.transform import Rotation

    xyzw = Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_quat()
    wxyz = np.concatenate([xyzw[:, 3:], xyzw[:, :3]], axis=1)
    return wxyz * np.where(wxyz[:, :1] < 0, -1.0, 1.0)


def cameras_bin(cameras: CameraSet, sizes: Sequence[tuple[int, int]]) -> bytes:
    """cameras.bin: one PINHOLE camera per camera of the set, ids 1..C in its order.
    sizes: C (width, height) px."""
    out = [np.array([len(cameras.ids)], "<u8").tobytes()]
    for c in range(len(cameras.ids)):
        K = cameras.K[c]
        out.append(np.array([c + 1, PINHOLE], "<i4").tobytes())
        out.append(np.array(sizes[c], "<u8").tobytes())
        out.append(np.array([K[0, 0], K[1, 1], K[0, 2] + COLMAP_PIXEL_OFFSET, K[1, 2] + COLMAP_PIXEL_OFFSET],
                            "<f8").tobytes())
    return b"".join(out)


def images_bin(cameras: CameraSet, names: Sequence[str], points2d: Sequence[np.ndarray],
               point_ids: Sequence[np.ndarray]) -> bytes:
    """images.bin: image c (id c + 1) is camera c (id c + 1), named names[c], with the 2D points
    points2d[c] (Nc x 2, OpenCV pixel coordinates: written + 0.5) observing the 3D points
    point_ids[c] (Nc,)."""
    quaternions = world_to_camera_quaternions(cameras.R)
    translations = np.asarray(cameras.T, dtype=np.float64).reshape(-1, 3) / MM_PER_M
    out = [np.array([len(cameras.ids)], "<u8").tobytes()]
    for c in range(len(cameras.ids)):
        out.append(np.array([c + 1], "<i4").tobytes())
        out.append(np.concatenate([quaternions[c], translations[c]]).astype("<f8").tobytes())
        out.append(np.array([c + 1], "<i4").tobytes())
        out.append(names[c].encode("utf-8") + b"\0")
        xy = np.asarray(points2d[c], dtype=np.float64).reshape(-1, 2) + COLMAP_PIXEL_OFFSET
        out.append(np.array([len(xy)], "<u8").tobytes())
        table = np.zeros(len(xy), dtype=[("x", "<f8"), ("y", "<f8"), ("id", "<i8")])
        table["x"], table["y"], table["id"] = xy[:, 0], xy[:, 1], np.asarray(point_ids[c], dtype=np.int64)
        out.append(table.tobytes())
    return b"".join(out)


def points3d_bin(points: np.ndarray, colours: np.ndarray, tracks: Sequence[np.ndarray]) -> bytes:
    """points3D.bin: point k (id k + 1) at points[k] (metres) with colour colours[k] (RGB uint8)
    and the track tracks[k] (Tk x 2: image id, index of its 2D point in that image)."""
    out = [np.array([len(points)], "<u8").tobytes()]
    for k, (xyz, rgb, track) in enumerate(zip(np.asarray(points, dtype=np.float64), np.asarray(colours), tracks)):
        out.append(np.array([k + 1], "<u8").tobytes())
        out.append(xyz.astype("<f8").tobytes())
        out.append(np.asarray(rgb, dtype=np.uint8).tobytes())
        out.append(np.array([0.0], "<f8").tobytes())
        track = np.asarray(track, dtype=np.int64).reshape(-1, 2)
        out.append(np.array([len(track)], "<u8").tobytes())
        out.append(track.astype("<i4").tobytes())
    return b"".join(out)


def visible_vertices(vertices_mm: np.ndarray, cameras: CameraSet, depths_m: Sequence[np.ndarray | None],
                     tolerance_mm: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Which vertices each camera sees: vertices Vx3 (world, mm), depth maps C x (H, W) metres
    (0 = no hand; None: the camera sees none) -> (pixels C x V x 2 (OpenCV), visible C x V bool):
    in front of the camera, inside the image, and within `tolerance_mm` of the depth map at their
    nearest pixel centre."""
    pixels, z_mm = cameras.project(np.asarray(vertices_mm, dtype=np.float64))
    visible = np.zeros(z_mm.shape, bool)
    for c, depth in enumerate(depths_m):
        if depth is None:
            continue
        height, width = depth.shape
        col, row = np.rint(pixels[c, :, 0]).astype(np.int64), np.rint(pixels[c, :, 1]).astype(np.int64)
        inside = (z_mm[c] > 0) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
        surface_mm = np.zeros(len(col))
        surface_mm[inside] = depth[row[inside], col[inside]] * MM_PER_M
        visible[c] = inside & (surface_mm > 0) & (np.abs(surface_mm - z_mm[c]) <= tolerance_mm)
    return pixels, visible


def vertex_colours(pixels: np.ndarray, visible: np.ndarray, images: Sequence[np.ndarray | None],
                   unseen: tuple[int, int, int] = (128, 128, 128)) -> np.ndarray:
    """The median colour of each vertex over the views that see it: pixels C x V x 2, visible
    C x V, images C x (H, W, 3) uint8 RGB (None: not read) -> V x 3 uint8; `unseen` where no view
    sees the vertex."""
    C, V = visible.shape
    samples = np.full((C, V, 3), np.nan)
    for c, image in enumerate(images):
        if image is None:
            continue
        seen = visible[c]
        col, row = np.rint(pixels[c, seen, 0]).astype(np.int64), np.rint(pixels[c, seen, 1]).astype(np.int64)
        samples[c, seen] = image[row, col]
    colours = np.full((V, 3), unseen, dtype=np.float64)
    any_seen = visible.any(axis=0)
    colours[any_seen] = np.nanmedian(samples[:, any_seen], axis=0)
    return np.clip(np.rint(colours), 0, 255).astype(np.uint8)
