"""Offscreen rendering of hand masks and depth maps with pyrender (EGL or OSMesa).

The OpenGL platform is chosen by `gl_platform.select_platform`, which sets PYOPENGL_PLATFORM before
pyrender is first imported; pyrender is imported lazily inside `HandViewRenderer`, and driven
below its public API only through `pyrender_adapter`.

With OSMesa (software rendering), each view is rasterised and read back only over the bounding box
of the hands' projected vertices (plus a margin), and pasted into the full-size outputs: a
fraction of the pixels to clear, rasterise and read back. The box is a scissor rectangle over the
full-size viewport and projection, so every pixel is computed exactly as in a full-size render
(the tests compare the two bit for bit); a triangle's pixels lie inside the box of its vertices
(every vertex is in front of the camera; otherwise the whole image is drawn). (Shrinking the
viewport and shifting the principal point instead, as earlier versions did, changes the rounding
before rasterisation: one edge pixel in about 1,000 views flipped, depth differed by up to
0.03 mm.)

Outputs per view (H x W of that camera's images):
    mask   uint8 (H, W): 0 background, 100 where the nearest surface is the left hand, 200 right
    depth  float32 (H, W): z of the nearest hand surface in the camera frame (metres), 0 = no hand
    parts  uint8 (H, W), with part labels on: the part (parts.PART_TABLE) of the nearest face; the
           mask is then derived from it (parts.parts_to_mask), in the same single pass
Masks alone are drawn in pyrender's segmentation mode, a colour per hand node. Part labels are
drawn unlit (pyrender's flat shader: the vertex colour, unchanged), one node per hand as before,
with vertices coloured label / 255: a vertex whose faces lie in several parts is drawn once per part
(`part_mesh`), so every face's three vertices carry its label. (A node per part would cost
pyrender's per-node overhead 16 times: views took 2.5 times as long.) The same triangles are
rasterised either way, so the mask derived from the parts is the segmentation mask (the tests
compare them byte for byte).
Pixels are sampled at their centres (multisampling off), the InterHand2.6M / OpenCV convention.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

import numpy as np

from . import pyrender_adapter
from .layout import MASK_LABELS
from .parts import part_label, parts_to_mask
from .cameras import CameraSet, camera_to_world, opencv_to_opengl

log = logging.getLogger(__name__)

Z_NEAR, Z_FAR = 0.01, 20.0  # metres; a 24-bit depth buffer then resolves ~6 micrometres at 1 m

_imported_platform: str | None = None


def can_render_here(platform: str) -> bool:
    """Whether this process can render on `platform` (PyOpenGL fixes its platform at import)."""
    if "pyrender" not in sys.modules:
        return True
    return _imported_platform == platform


def camera_pose_opengl(R: np.ndarray, T_mm: np.ndarray) -> np.ndarray:
    """World-to-camera R (3x3) and T (3, mm) of OpenCV cameras -> 4x4 camera-to-world pose of the
    pyrender (OpenGL) camera in metres: inverse extrinsics composed with the axis flip."""
    T_m = np.asarray(T_mm, dtype=np.float64).reshape(1, 3) / 1000.0
    return opencv_to_opengl(camera_to_world(np.asarray(R)[None], T_m))[0]


def part_mesh(faces: np.ndarray, face_joint: np.ndarray, hand: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A hand's faces F x 3 and each face's MANO joint (F,) -> the mesh that draws part labels:
    (source vertex of each drawn vertex (N,), faces F x 3 over the drawn vertices, RGBA colours
    N x 4 float32 = label / 255). A drawn vertex is a (vertex, part) pair used by some face."""
    faces = np.asarray(faces, dtype=np.int64)
    corner_joint = np.repeat(np.asarray(face_joint, dtype=np.int64), 3)
    pairs, drawn = np.unique(np.stack([faces.ravel(), corner_joint], 1), axis=0, return_inverse=True)
    labels = np.array([part_label(hand, j) for j in range(16)], np.float32)[pairs[:, 1]] / np.float32(255.0)
    colours = np.stack([labels, labels, labels, np.ones_like(labels)], 1)
    return pairs[:, 0], drawn.reshape(-1, 3), colours


@dataclass(frozen=True)
class ViewCamera:
    """One camera as the renderer needs it: id, K (3x3 px), R (3x3), T (3, mm), image size."""

    cam_id: str
    K: np.ndarray
    R: np.ndarray
    T: np.ndarray
    width: int
    height: int


CROP_MARGIN = 2  # pixels around the projected vertices' box


def crop_boxes(pixels: np.ndarray, depth_mm: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Pixel boxes to draw: projected vertices CxPx2 (px) with their depth CxP (mm), sizes Cx2 (w, h)
    -> Cx4 int (x0, y0, x1, y1), the whole image where a vertex is not in front of the camera,
    an empty box (x1 <= x0) where no vertex projects into the image's neighbourhood."""
    lo = np.floor(pixels.min(axis=1)) - CROP_MARGIN
    hi = np.ceil(pixels.max(axis=1)) + 1 + CROP_MARGIN
    boxes = np.concatenate([np.maximum(lo, 0), np.minimum(hi, sizes)], axis=1)
    behind = (depth_mm <= Z_NEAR * 1000.0).any(axis=1)
    boxes[behind] = np.concatenate([np.zeros((int(behind.sum()), 2)), sizes[behind]], axis=1)
    return boxes.astype(np.int64)


# The label check of every rendered view (`HandViewRenderer.label_problem`): a vertex is seen when
# its pixel shows a surface at most this far in front of it (metres); a hand with this many seen
# vertices must carry its own label on most of them.
SEEN_TOLERANCE_M = 0.005
MIN_SEEN_VERTICES = 20
MIN_OWN_LABEL_SHARE = 0.5


def label_problem(mask: np.ndarray, depth: np.ndarray, projected: dict[str, tuple[np.ndarray, np.ndarray]]) -> str | None:
    """Why a rendered view's labels cannot be right, or None: a CPU check independent of the GL
    pipeline's colours.

    mask (H, W) uint8 MASK_LABELS, depth (H, W) float32 metres (0 = no hand);
    projected {hand: (pixels Vx2, z V metres)}: the hand's vertices projected into this view.
    A vertex is seen when its pixel (nearest pixel centre) shows a hand surface no more than
    SEEN_TOLERANCE_M in front of it. Where the hands touch, seen vertices of one hand can show the
    other's label, so the rule is a majority: a hand with MIN_SEEN_VERTICES seen vertices must
    carry its label on at least MIN_OWN_LABEL_SHARE of them (a hand drawn with the other's colour
    carries it on none).
    """
    height, width = mask.shape
    for hand, (pixels, z) in projected.items():
        col = np.rint(pixels[:, 0]).astype(np.int64)
        row = np.rint(pixels[:, 1]).astype(np.int64)
        inside = (col >= 0) & (col < width) & (row >= 0) & (row < height) & (z > 0)
        col, row, z = col[inside], row[inside], z[inside]
        surface = depth[row, col]
        seen = (surface > 0) & (z <= surface + SEEN_TOLERANCE_M)
        count = int(seen.sum())
        if count < MIN_SEEN_VERTICES:
            continue
        own = int((mask[row[seen], col[seen]] == MASK_LABELS[hand]).sum())
        if own < MIN_OWN_LABEL_SHARE * count:
            found = {int(v): int(n) for v, n in zip(*np.unique(mask[row[seen], col[seen]], return_counts=True))}
            return (f"{own} of the {hand} hand's {count} visible vertices carry its label {MASK_LABELS[hand]} "
                    f"(labels there: {found})")
    return None


class HandViewRenderer:
    """Renders mask and depth of the current hand meshes from many cameras.

    One GL context per instance (create one per worker process): a single OffscreenRenderer,
    resized when the image size changes (render all views of one size before the next), and one
    Scene per image size. A frame's meshes are uploaded once per size and seen from every camera
    by switching the scene's camera node. (Several EGL renderers in one process share a display
    that pyrender terminates when the first is deleted, pyrender issues 148 and 223.)
    """

    def __init__(self, cameras: list[ViewCamera], face_parts: dict[str, np.ndarray] | None = None):
        """face_parts: {hand: (F,) MANO joint of each face (parts.face_parts)} to draw part labels
        (`render_parts`) instead of hand labels, in one pass as before."""
        global _imported_platform
        platform = os.environ.get("PYOPENGL_PLATFORM")
        if not can_render_here(platform):
            raise RuntimeError(f"pyrender was imported here for {_imported_platform}, not {platform}")
        import pyrender

        _imported_platform = platform
        pyrender_adapter.stable_context_ids()

        self._pyrender = pyrender
        self._flags = pyrender.RenderFlags.SEG if face_parts is None else pyrender.RenderFlags.FLAT
        self._by_size: dict[tuple[int, int], dict] = {}
        self.cameras = {c.cam_id: c for c in cameras}
        self.face_parts = None if face_parts is None else {h: np.asarray(p, dtype=np.int64) for h, p in face_parts.items()}
        self._part_meshes: dict[str, tuple] = {}  # hand -> (faces it was made for, part_mesh)
        for cam in cameras:
            size = (cam.width, cam.height)
            if size not in self._by_size:
                self._by_size[size] = {"scene": pyrender.Scene(bg_color=(0, 0, 0, 0)), "nodes": {}, "hands": {},
                                       "ids": [], "boxes": {}}
            entry = self._by_size[size]
            K = cam.K
            # pyrender puts pixel centres at +0.5, OpenCV at integers
            intrinsics = pyrender.IntrinsicsCamera(K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5, znear=Z_NEAR, zfar=Z_FAR)
            entry["nodes"][cam.cam_id] = entry["scene"].add(intrinsics, pose=camera_pose_opengl(cam.R, cam.T))
            entry["ids"].append(cam.cam_id)
        for size, entry in self._by_size.items():
            group = [self.cameras[c] for c in entry["ids"]]
            entry["rig"] = CameraSet([c.cam_id for c in group], np.stack([c.K for c in group]),
                                     np.stack([c.R for c in group]), np.stack([np.asarray(c.T).reshape(3) for c in group]))
            entry["index"] = {cam_id: k for k, cam_id in enumerate(entry["ids"])}
        first = next(iter(self._by_size))
        self._offscreen = pyrender.OffscreenRenderer(*first)
        # OSMesa draws into a fixed buffer, so a smaller viewport costs nothing to set up; EGL's
        # framebuffers would be reallocated for every new viewport size: it draws whole images
        self.crops = not pyrender_adapter.uses_framebuffers(self._offscreen)
        self._size = None

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """Image sizes (width, height) of the cameras, each with its own scene and renderer."""
        return list(self._by_size)

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
            positions = np.asarray(vertices, dtype=np.float32)
            colours = None
            if self.face_parts is not None:  # vertices coloured with the label of their faces' part
                made_for, mesh = self._part_meshes.get(hand, (None, None))
                if made_for is None or not np.array_equal(made_for, faces):
                    if len(self.face_parts[hand]) != len(faces):
                        raise ValueError(f"{len(self.face_parts[hand])} face parts for the {hand} hand's "
                                         f"{len(faces)} faces")
                    mesh = part_mesh(faces, self.face_parts[hand], hand)
                    self._part_meshes[hand] = (faces.copy(), mesh)
                source, drawn_faces, colours = mesh
                positions = positions[source]
                faces = drawn_faces.astype(np.uint32)
            # a new mesh per frame: editing positions in place would not reach the GPU (pyrender #43)
            primitive = pyrender.Primitive(positions=positions, indices=np.concatenate([faces, faces[:, ::-1]]),
                                           color_0=colours, mode=pyrender.GLTF.TRIANGLES)
            entry["hands"][hand] = scene.add(pyrender.Mesh([primitive]))
        # every hand's vertices projected into every camera of this size, once per frame: for the
        # crop boxes and for the label check of each view
        rig = entry["rig"]
        entry["projected"] = {}
        for hand, (vertices, _) in meshes.items():
            pixels, z_mm = rig.project(np.asarray(vertices, dtype=np.float64) * 1000.0)
            entry["projected"][hand] = (pixels, z_mm / 1000.0)
        if meshes and self.crops:
            pixels = np.concatenate([p for p, _ in entry["projected"].values()], axis=1)
            z = np.concatenate([d for _, d in entry["projected"].values()], axis=1) * 1000.0
            sizes = np.tile(np.array(size, dtype=np.float64), (len(entry["ids"]), 1))
            entry["boxes"] = dict(zip(entry["ids"], crop_boxes(pixels, z, sizes)))
        else:
            entry["boxes"] = {}

    def label_problem(self, cam_id: str, mask: np.ndarray, depth: np.ndarray) -> str | None:
        """`label_problem` of a view just rendered from `cam_id` with the current hands."""
        cam = self.cameras[cam_id]
        entry = self._by_size[(cam.width, cam.height)]
        c = entry["index"][cam_id]
        return label_problem(mask, depth, {hand: (p[c], z[c]) for hand, (p, z) in entry.get("projected", {}).items()})

    def render(self, cam_id: str) -> tuple[np.ndarray, np.ndarray]:
        """-> mask uint8 (H, W) with MASK_LABELS, depth float32 (H, W) metres (0 = no hand)."""
        images = self._draw(cam_id)
        return images[-2], images[-1]

    def render_parts(self, cam_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> part labels uint8 (H, W) (parts.PART_TABLE), the mask they imply, depth (as `render`),
        from one pass; the renderer must have been made with face_parts."""
        if self.face_parts is None:
            raise ValueError("this renderer draws no part labels (made without face_parts)")
        return self._draw(cam_id)

    def _draw(self, cam_id: str) -> list[np.ndarray]:
        """The whole image's [part labels (with face_parts),] mask and depth."""
        cam = self.cameras[cam_id]
        size = (cam.width, cam.height)
        entry = self._by_size[size]
        box = entry["boxes"].get(cam_id)
        count = 3 if self.face_parts is not None else 2
        if not entry["hands"] or (box is not None and (box[2] <= box[0] or box[3] <= box[1])):
            return ([np.zeros((cam.height, cam.width), np.uint8) for _ in range(count - 1)]
                    + [np.zeros((cam.height, cam.width), np.float32)])
        scene = entry["scene"]
        node = entry["nodes"][cam_id]
        scene.main_camera_node = node
        seg = None if self.face_parts is not None else {n: (MASK_LABELS[hand],) * 3 for hand, n in entry["hands"].items()}
        if size != self._size:  # made current once per image size, not per view
            pyrender_adapter.activate(self._offscreen, size)
            self._size = size
        labels, depth = pyrender_adapter.draw(self._offscreen, scene, self._flags, seg, size,
                                              None if box is None else tuple(int(v) for v in box))
        # the mask from the parts over the box only: a lookup over the whole image costs ~0.7 ms
        images = [labels, parts_to_mask(labels), depth] if self.face_parts is not None else [labels, depth]
        if box is None or tuple(box) == (0, 0, cam.width, cam.height):
            return images
        x0, y0, x1, y1 = (int(v) for v in box)
        full = [np.zeros((cam.height, cam.width), image.dtype) for image in images]
        for whole, image in zip(full, images):
            whole[y0:y1, x0:x1] = image
        return full

    def close(self) -> None:
        if self._offscreen is not None:
            self._offscreen.delete()
            self._offscreen = None

    def __enter__(self) -> "HandViewRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
