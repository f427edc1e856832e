"""MANO hand model: chumpy-free loading of the official pickles, and the batched forward pass.

The official MANO_RIGHT.pkl / MANO_LEFT.pkl are Python-2 pickles whose `shapedirs` is a chumpy
object. chumpy cannot be installed on current Python and numpy, so the unpickler below maps the
chumpy classes to inert stand-ins and reads their arrays (`Select` over `Ch`). Only the modules a
MANO file uses may be loaded from it; anything else is refused.

The forward pass is the `smplx` package's MANO (use_pca=False, flat_hand_mean=False): the 45 finger
parameters of InterHand2.6M are relative to `hands_mean`. Units are metres throughout.
"""

from __future__ import annotations

import contextlib
import io
import logging
import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from .errors import InputError

log = logging.getLogger(__name__)

HANDS = ("right", "left")
NUM_JOINTS = 16
# parents of the 16 MANO joints: wrist, then index, middle, pinky, ring, thumb (three each)
PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14], dtype=np.int64)
MANO_DOWNLOAD_HINT = (
    "download the MANO model (Models & Code) from https://mano.is.tue.mpg.de under its licence "
    "and put MANO_RIGHT.pkl and MANO_LEFT.pkl into {dir} (or pass --mano-dir)"
)
_REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f",
                  "hands_mean", "hands_components")


def model_filename(hand: str) -> str:
    if hand not in HANDS:
        raise ValueError(f"unknown hand {hand!r}; expected one of {HANDS}")
    return f"MANO_{hand.upper()}.pkl"


# ---------------------------------------------------------------------------------------------
# Unpickling without chumpy


class _ChumpyStandIn:
    """Holds the pickled state of a chumpy object; `value()` evaluates the supported kinds."""

    kind = ""

    def __setstate__(self, state):
        self.__dict__.update(state)

    def value(self) -> np.ndarray:
        if self.kind == "Ch":
            return np.asarray(self.__dict__["x"])
        if self.kind == "Select":
            source = _as_array(self.__dict__["a"])
            return source.ravel()[self.__dict__["idxs"]].reshape(self.__dict__["preferred_shape"])
        raise TypeError(f"unsupported chumpy object chumpy.{self.kind}")


def _chumpy_class(name: str) -> type:
    return type(name, (_ChumpyStandIn,), {"kind": name})


_ALLOWED_MODULES = ("numpy", "scipy.sparse", "copy_reg", "copyreg", "__builtin__", "builtins", "_codecs")


class _MANOUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.startswith("chumpy"):
            return _chumpy_class(name)
        if module == "scipy.sparse.csc":  # written by old scipy; the namespace is deprecated
            module = "scipy.sparse"
        if module.split(".")[0] in ("numpy", "scipy") or module in _ALLOWED_MODULES:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a MANO file")


def _as_array(value) -> np.ndarray:
    if isinstance(value, _ChumpyStandIn):
        return value.value()
    if hasattr(value, "toarray"):  # scipy sparse (the J_regressor)
        return value.toarray()
    return np.asarray(value)


def read_model_file(path: str | Path) -> dict:
    """Read a MANO pickle (official chumpy format or plain numpy) into a dict of arrays."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = _MANOUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise InputError(f"{path}: MANO model not found; " + MANO_DOWNLOAD_HINT.format(dir=path.parent)) from None
    except Exception as exc:
        raise InputError(f"{path}: not a readable MANO model ({type(exc).__name__}: {exc})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: not a MANO model (a {type(raw).__name__}, expected a dict)")
    missing = [k for k in _REQUIRED_KEYS if k not in raw]
    if missing:
        raise InputError(f"{path}: not a MANO model (missing {', '.join(missing)})")
    try:
        return {k: (v if isinstance(v, str) else _as_array(v)) for k, v in raw.items()}
    except TypeError as exc:
        raise InputError(f"{path}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# The model as plain arrays


@dataclass
class ManoModel:
    """A MANO hand model as plain arrays (metres).

    v_template : Vx3, shapedirs : Vx3x10, posedirs : Vx3x135, J_regressor : 16xV (dense),
    weights : Vx16, faces : Fx3 int64, parents : 16 int64 (root -1), hands_mean : 45,
    hands_components : 45x45.
    """

    hand: str
    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    faces: np.ndarray
    parents: np.ndarray
    hands_mean: np.ndarray
    hands_components: np.ndarray
    path: Path | None = None
    left_shapedirs_fixed: bool = False

    @property
    def num_vertices(self) -> int:
        return len(self.v_template)


def left_shapedirs_defect(left_shapedirs: np.ndarray, right_shapedirs: np.ndarray) -> bool:
    """True when the left model's first shape-space row equals the right model's (smplx issue 48).

    In a correct left model it is the mirror image (negated x); the official file ships it
    un-negated. Comparing against the right model keeps the fix from undoing itself.
    """
    left_x, right_x = left_shapedirs[:, 0, :], right_shapedirs[:, 0, :]
    scale = max(float(np.abs(right_x).max()), 1e-12)
    return bool(np.abs(left_x - right_x).max() <= 1e-6 * scale)


def load_mano_model(mano_dir: str | Path, hand: str) -> ManoModel:
    """Load MANO_<HAND>.pkl from `mano_dir`; for the left hand, fix the shapedirs defect if present.

    The left fix needs MANO_RIGHT.pkl beside the left file (as the official download has it).
    """
    mano_dir = Path(mano_dir)
    path = mano_dir / model_filename(hand)
    data = read_model_file(path)
    try:
        model = ManoModel(
            hand=hand,
            v_template=data["v_template"].astype(np.float64),
            shapedirs=data["shapedirs"].astype(np.float64),
            posedirs=data["posedirs"].astype(np.float64),
            J_regressor=data["J_regressor"].astype(np.float64),
            weights=data["weights"].astype(np.float64),
            faces=data["f"].astype(np.int64),
            parents=data["kintree_table"][0].astype(np.int64),
            hands_mean=data["hands_mean"].astype(np.float64).ravel(),
            hands_components=data["hands_components"].astype(np.float64),
            path=path,
        )
    except (ValueError, TypeError, IndexError) as exc:
        raise InputError(f"{path}: malformed MANO arrays ({exc})") from None
    model.parents[0] = -1  # stored as uint32 4294967295
    _check_model_shapes(model)
    if hand == "left":
        right_path = mano_dir / model_filename("right")
        if right_path.is_file():
            right = read_model_file(right_path)
            if np.allclose(right["v_template"], model.v_template):
                raise InputError(f"{path}: this is the right-hand model (same template as {right_path})")
            if left_shapedirs_defect(model.shapedirs, right["shapedirs"]):
                model.shapedirs[:, 0, :] *= -1
                model.left_shapedirs_fixed = True
                log.info("%s: negated shapedirs[:, 0, :] (known defect of the official left model)", path)
        else:
            log.warning("%s: cannot check the left shapedirs defect without %s", path, right_path)
    return model


def _check_model_shapes(model: ManoModel) -> None:
    V = model.num_vertices
    expected = {
        "v_template": (V, 3), "posedirs": (V, 3, 9 * (NUM_JOINTS - 1)), "J_regressor": (NUM_JOINTS, V),
        "weights": (V, NUM_JOINTS), "parents": (NUM_JOINTS,), "hands_mean": (45,),
    }
    for name, shape in expected.items():
        if getattr(model, name).shape != shape:
            raise InputError(f"{model.path}: MANO array {name} has shape {getattr(model, name).shape}, expected {shape}")
    if model.shapedirs.shape[:2] != (V, 3) or model.faces.ndim != 2 or model.faces.shape[1] != 3:
        raise InputError(f"{model.path}: MANO shapedirs/faces have unexpected shapes")


# ---------------------------------------------------------------------------------------------
# Forward pass (smplx)


@dataclass
class ManoOutput:
    """vertices : NxVx3, joints : Nx16x3, both in world coordinates (metres)."""

    vertices: np.ndarray
    joints: np.ndarray


class ManoLayer:
    """Batched MANO forward pass through smplx.MANO, in float64 on the CPU."""

    def __init__(self, model: ManoModel):
        import smplx
        import torch
        from smplx.utils import Struct

        self.model = model
        self._torch = torch
        struct = Struct(
            v_template=model.v_template, shapedirs=model.shapedirs, posedirs=model.posedirs,
            J_regressor=model.J_regressor, weights=model.weights, f=model.faces,
            kintree_table=np.stack([model.parents, np.arange(NUM_JOINTS)]),
            hands_mean=model.hands_mean, hands_components=model.hands_components,
        )
        with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a warning about 10 betas
            self.layer = smplx.MANO(
                model_path=str(model.path or "MANO"), data_struct=struct, is_rhand=model.hand == "right",
                use_pca=False, flat_hand_mean=False, num_betas=model.shapedirs.shape[-1], dtype=torch.float64,
            )

    def __call__(self, pose: np.ndarray, shape: np.ndarray, trans: np.ndarray) -> ManoOutput:
        """pose : Nx48 (global axis-angle, then 45 finger parameters relative to hands_mean),
        shape : Nx10, trans : Nx3 (metres)  ->  ManoOutput in world coordinates (metres)."""
        torch = self._torch
        pose = np.asarray(pose, dtype=np.float64).reshape(-1, 48)
        num_betas = self.layer.num_betas
        as_t = lambda a, n: torch.from_numpy(np.ascontiguousarray(np.asarray(a, dtype=np.float64).reshape(-1, n)))
        with torch.no_grad():
            out = self.layer(global_orient=as_t(pose[:, :3], 3), hand_pose=as_t(pose[:, 3:], 45),
                             betas=as_t(shape, num_betas), transl=as_t(trans, 3))
        return ManoOutput(vertices=out.vertices.numpy(), joints=out.joints.numpy())


@lru_cache(maxsize=None)
def _cached_layer(mano_dir: str, hand: str) -> ManoLayer:
    return ManoLayer(load_mano_model(mano_dir, hand))


def mano_layer(mano_dir: str | Path, hand: str) -> ManoLayer:
    """One ManoLayer per (model folder, hand) per process."""
    return _cached_layer(str(Path(mano_dir).resolve()), hand)


# ---------------------------------------------------------------------------------------------
# Parameter conventions


def axis_angle_to_matrix(rvec: np.ndarray) -> np.ndarray:
    """rvec : Nx3 axis-angle (radians)  ->  Nx3x3 rotation matrices (Rodrigues)."""
    return Rotation.from_rotvec(np.asarray(rvec, dtype=np.float64).reshape(-1, 3)).as_matrix()


def easymocap_params(pose: np.ndarray, shape: np.ndarray, trans: np.ndarray, root_joint: np.ndarray,
                     hands_mean: np.ndarray) -> dict[str, np.ndarray]:
    """InterHand MANO parameters -> Animatable-NeRF / EasyMocap parameters, batched.

    pose : Nx48, shape : Nx10, trans : Nx3 (m), root_joint : Nx3 world wrist joint (m, the
    forward pass's joints[:, 0]), hands_mean : 45.
    Returns poses Nx48 (zeros(3), then fingers + hands_mean), Rh Nx3 (global axis-angle),
    Th Nx3 (m), shapes Nx10, such that   vertices = (MANO(poses, Rh=0, Th=0) @ Rodrigues(Rh).T) + Th,
    i.e. (vertices - Th) @ Rodrigues(Rh) is the mesh posed with zero global rotation and translation.
    """
    pose = np.asarray(pose, dtype=np.float64).reshape(-1, 48)
    Rh = pose[:, :3].copy()
    # The global rotation turns the hand about its rest-pose wrist joint J0 (= root_joint - trans):
    # v = R (v0 - J0) + J0 + trans  =>  Th = root_joint - R J0.
    rest_root = root_joint - trans
    Th = root_joint - np.einsum("nij,nj->ni", axis_angle_to_matrix(Rh), rest_root)
    poses = np.concatenate([np.zeros_like(Rh), pose[:, 3:] + hands_mean[None]], axis=1)
    return {"poses": poses, "Rh": Rh, "Th": Th, "shapes": np.asarray(shape, dtype=np.float64).reshape(len(pose), -1)}


def canonical_params(hands_mean: np.ndarray, shape: np.ndarray, root_joint: np.ndarray) -> dict[str, np.ndarray]:
    """The T-pose parameters: mean finger pose, Rh = (0, 0, pi/2), Th = j - Rodrigues(Rh) @ j.

    shape : 10, root_joint : 3 world wrist joint (m) of the first kept frame. Arrays are 1xK.
    """
    Rh = np.array([[0.0, 0.0, np.pi / 2]])
    j = np.asarray(root_joint, dtype=np.float64).reshape(3)
    Th = (j - axis_angle_to_matrix(Rh)[0] @ j)[None]
    poses = np.concatenate([np.zeros(3), hands_mean])[None]
    return {"poses": poses, "Rh": Rh, "Th": Th, "shapes": np.asarray(shape, dtype=np.float64).reshape(1, -1)}
