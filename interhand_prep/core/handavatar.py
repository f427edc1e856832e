"""HandAvatar's (and OHTA's) view of a hand: their MANO variant, their per-view annotation record
and their bounding box, as pure functions over arrays; and the pickle their environment (numpy
1.23) loads.

As read in HandAvatar's `handavatar/core/data/interhand/train.py` (Dataset.preprocess and the
loader), its bundled `smplx/body_models.py` (MANO with center_id 4, scale 10, seal, distal) and
`handavatar/core/utils/augm_util.py`:
- all 3D values are in decimetres (metres x 10, `smpl_cfg.scale`), in the camera frame: the
  camera's extrinsics are the identity, and the mesh is MANO's output plus `Th`;
- their MANO is flat_hand_mean: `poses[3:]` are absolute finger rotations (ours plus hands_mean
  already, as params/ stores them), `poses[:3]` the global orientation rotated into the camera;
- its output is centred on the posed joint 4 (middle knuckle) and scaled by 10; a 779th vertex
  seals the wrist (the mean of SEAL_VERTICES), and the 5 fingertip vertices TIP_VERTICES (index,
  middle, little, ring, thumb) follow the 16 joints: 21 joints in MANO_JOINT_ORDER.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

from .mano import ManoModel
from .mano_forward import axis_angle_to_matrix, forward

SCALE = 10.0          # their smpl_cfg.scale: metres -> decimetres
CENTER_JOINT = 4      # their smpl_cfg.center_id: the middle finger's knuckle
BBOX_OFFSET = 0.01    # their cfg.bbox_offset (dm) around the posed vertices
SEAL_VERTICES = (108, 79, 78, 121, 214, 215, 279, 239, 234, 92, 38, 122, 118, 117, 119, 120)
TIP_VERTICES = (333, 444, 672, 555, 744)  # index, middle, little, ring, thumb (their `distal` joints)
MANO_JOINT_ORDER = ("wrist", "index1", "index2", "index3", "middle1", "middle2", "middle3", "pinky1", "pinky2",
                    "pinky3", "ring1", "ring2", "ring3", "thumb1", "thumb2", "thumb3", "index4", "middle4", "pinky4",
                    "ring4", "thumb4")
MASK_ON = 255         # their masks: 0 / 255 (the loader keeps > 150 after warping)


def rotation_vector(R: np.ndarray) -> np.ndarray:
    """3x3 rotation -> axis-angle (3,)."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_rotvec()


def handavatar_mano(model: ManoModel, poses: np.ndarray, shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HandAvatar's MANO: poses (48,) global axis-angle then 45 absolute finger parameters
    (flat_hand_mean), shape (10,) -> (joints 21x3, vertices 779x3) in decimetres, centred on the
    posed joint 4, without translation."""
    poses = np.asarray(poses, dtype=np.float64).reshape(48)
    relative = np.concatenate([poses[:3], poses[3:] - model.hands_mean])  # forward() adds hands_mean back
    out = forward(model, relative[None], np.asarray(shape, dtype=np.float64).reshape(1, -1), np.zeros((1, 3)))
    centre = out.joints[0, CENTER_JOINT]
    joints = (out.joints[0] - centre) * SCALE
    vertices = (out.vertices[0] - centre) * SCALE
    vertices = np.concatenate([vertices, vertices[list(SEAL_VERTICES)].mean(axis=0, keepdims=True)])
    return np.concatenate([joints, vertices[list(TIP_VERTICES)]]), vertices


def frame_records(model: ManoModel, params: dict[str, np.ndarray], R: np.ndarray, T_mm: np.ndarray, K: np.ndarray
                  ) -> list[tuple[dict, np.ndarray]]:
    """The mesh_infos entries of one frame's hand in C cameras, from our params
    (params/<hand>/<frame>.npy: world Rh, Th in metres, poses with hands_mean, shapes) and the
    cameras (R Cx3x3, T Cx3 mm: X_cam = R X + T; K Cx3x3 px) -> per camera (the entry,
    HandAvatar's 779 vertices in the camera frame, dm).

    HandAvatar's MANO with the global orientation G = R Rh is G (x - joint 4) for every point x of
    the hand posed without global motion (MANO rotates about joint 0; centring removes the pivot),
    so the hand is posed once per frame and rotated per camera. Th is exact for our mesh:
    camera-frame vertices (dm) = HandAvatar's vertices + Th (HandAvatar anchors Th on the annotated
    wrist, 2-5 mm off the fit). joint_cam is the fit's 21 joints in the camera frame (joint_valid
    all 1), joint_img their pixels (truncated, as theirs)."""
    R = np.asarray(R, dtype=np.float64).reshape(-1, 3, 3)
    T_m = np.asarray(T_mm, dtype=np.float64).reshape(-1, 3) / 1000.0
    K = np.asarray(K, dtype=np.float64).reshape(-1, 3, 3)
    Rh = axis_angle_to_matrix(np.asarray(params["Rh"], dtype=np.float64).reshape(1, 3))[0]
    fingers = np.asarray(params["poses"], dtype=np.float64).reshape(48)[3:]
    shape = np.asarray(params["shapes"], dtype=np.float64).reshape(-1)[:10]
    # the hand without global motion, its joint 4 at the origin (decimetres)
    joints_local, vertices_local = handavatar_mano(model, np.concatenate([np.zeros(3), fingers]), shape)
    tpose_joints, _ = handavatar_mano(model, np.zeros(48), shape)
    # the fit's joint 4 in the world: the params' rigid motion of the pose-space joint
    local = forward(model, np.concatenate([np.zeros(3), fingers - model.hands_mean])[None], shape[None],
                    np.zeros((1, 3))).joints[0, CENTER_JOINT]
    knuckle_world = Rh @ local + np.asarray(params["Th"], dtype=np.float64).reshape(3)
    out = []
    for c in range(len(R)):
        G = R[c] @ Rh
        joints, vertices = joints_local @ G.T, vertices_local @ G.T
        Th = SCALE * (R[c] @ knuckle_world + T_m[c])
        joint_cam = joints + Th
        focal, princpt = K[c][[0, 1], [0, 1]], K[c][[0, 1], [2, 2]]
        joint_img = (joint_cam[:, :2] / (joint_cam[:, 2:] + 1e-8) * focal + princpt).astype(np.int32)
        out.append(({
            "Rh": np.zeros(3),
            "Th": Th.astype(np.float32),
            "poses": np.concatenate([rotation_vector(G), fingers]),
            "shape": shape.copy(),
            "joints": joints.astype(np.float32),
            "tpose_joints": tpose_joints.astype(np.float32),
            "bbox": {"min_xyz": (vertices.min(axis=0) - BBOX_OFFSET).astype(np.float32),
                     "max_xyz": (vertices.max(axis=0) + BBOX_OFFSET).astype(np.float32)},
            "joint_img": joint_img,
            "joint_cam": joint_cam.astype(np.float32),
            "joint_valid": np.ones((21, 1)),
        }, vertices + Th))
    return out


def camera_record(K: np.ndarray) -> dict:
    """One view's cameras entry: K float64 3x3 (OpenCV pixel centres), identity extrinsics, no distortion."""
    return {"intrinsics": np.asarray(K, dtype=np.float64).copy(), "extrinsics": np.eye(4), "distortions": np.zeros(5)}


def joint_box(joint_img: np.ndarray, joint_valid: np.ndarray) -> np.ndarray:
    """x, y, w, h (float32): 1.2 times the extent of the valid 2D joints (their get_bbox), the
    stand-in for InterHand2.6M's annotated hand box."""
    x, y = joint_img[joint_valid == 1, 0], joint_img[joint_valid == 1, 1]
    cx, cy = (x.min() + x.max()) / 2.0, (y.min() + y.max()) / 2.0
    w, h = (x.max() - x.min()) * 1.2, (y.max() - y.min()) * 1.2
    return np.array([cx - 0.5 * w, cy - 0.5 * h, w, h], dtype=np.float32)


def square_box(box: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """Their process_bbox: the box clamped to the image and made square about its centre ->
    x, y, w, h float64, or None where nothing of it is inside the image."""
    x, y, w, h = (float(v) for v in box)
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(width - 1.0, x1 + max(0.0, w - 1)), min(height - 1.0, y1 + max(0.0, h - 1))
    if not (w * h > 0 and x2 > x1 and y2 > y1):
        return None
    w, h = x2 - x1, y2 - y1
    cx, cy = x1 + w / 2.0, y1 + h / 2.0
    side = max(w, h)
    return np.array([cx - side / 2.0, cy - side / 2.0, side, side], dtype=np.float64)


# numpy >= 2 pickles arrays as numpy._core.multiarray._reconstruct, which numpy 1.23 (HandAvatar's
# and OHTA's pinned version) cannot import; the numpy-1 name still loads in numpy 2.
try:
    from numpy._core import multiarray as _multiarray
    _NUMPY1_NAMES = {id(_multiarray._reconstruct): ("numpy.core.multiarray", "_reconstruct"),
                     id(_multiarray.scalar): ("numpy.core.multiarray", "scalar")}
except ImportError:  # numpy 1 writes these names itself
    _NUMPY1_NAMES = {}


class _Numpy1Pickler(pickle._Pickler):
    """The pure-Python pickler (its save_global can be replaced), writing numpy-1 names."""

    def save_global(self, obj, name=None):
        target = _NUMPY1_NAMES.get(id(obj))
        if target is None:
            return super().save_global(obj, name)
        self.save(target[0])
        self.save(target[1])
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)


def numpy1_pickle(obj) -> bytes:
    """`obj` pickled (protocol 4: 5 would name numpy._core.numeric._frombuffer) so that numpy 1.23
    and numpy 2 both load it."""
    buf = io.BytesIO()
    _Numpy1Pickler(buf, protocol=4).dump(obj)
    return buf.getvalue()
