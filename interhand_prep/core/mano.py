"""MANO hand model: the model as plain arrays, loaded once per file version, read-only, with the
left model's shapedirs defect fixed. Reading the official pickles without chumpy is `mano_file`'s;
the forward pass is `mano_forward`'s. Units are metres throughout.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .mano_file import read_file_bytes, read_model_bytes
from .constants import HANDS
from .errors import InputError

log = logging.getLogger(__name__)

NUM_JOINTS = 16
# parents of the 16 MANO joints: wrist, then index, middle, pinky, ring, thumb (three each)
PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14], dtype=np.int64)
JOINT_NAMES = ("wrist", "index 1", "index 2", "index 3", "middle 1", "middle 2", "middle 3", "pinky 1", "pinky 2",
               "pinky 3", "ring 1", "ring 2", "ring 3", "thumb 1", "thumb 2", "thumb 3")  # from the palm outwards


def model_filename(hand: str) -> str:
    if hand not in HANDS:
        raise ValueError(f"unknown hand {hand!r}; expected one of {HANDS}")
    return f"MANO_{hand.upper()}.pkl"


# ---------------------------------------------------------------------------------------------
# The model as plain arrays


@dataclass
class ManoModel:
    """A MANO hand model as plain arrays (metres).

    v_template : Vx3, shapedirs : Vx3x10, posedirs : Vx3x135, J_regressor : 16xV (dense),
    weights : Vx16, faces : Fx3 int64, parents : 16 int64 (root -1), hands_mean : 45,
    hands_components : 45x45. `sha256` is the file's; `left_fix` says whether the left model's
    shapedirs defect was found (and fixed), None when it could not be checked.
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
    sha256: str = ""
    left_fix: bool | None = None

    @property
    def num_vertices(self) -> int:
        return len(self.v_template)


@dataclass(frozen=True)
class DefectCheck:
    """How the left model's shapedirs[:, 0, :] compares with the right model's (Frobenius norms)."""

    to_right: float      # |left - right|: small when the left file carries the right's column
    to_mirror: float     # |left + right|: small when the column is correctly mirrored

    @property
    def defect(self) -> bool:
        return self.to_right < self.to_mirror


def left_shapedirs_check(left_shapedirs: np.ndarray, right_shapedirs: np.ndarray) -> DefectCheck:
    """Compare the left model's first shape-space row with the right model's and its negation.

    A correct left model is the mirror image of the right one (x negated), so its
    `shapedirs[:, 0, :]` is minus the right model's. The official left file ships it un-negated
    (smplx issue 48), equal to the right one up to float noise (entries differ by up to ~1e-6,
    never bit for bit). Whichever of the two it is nearer to decides, so noise of any size short of
    the column's own cannot flip the answer, and a fixed file is never negated again.
    """
    left_x, right_x = left_shapedirs[:, 0, :], right_shapedirs[:, 0, :]
    return DefectCheck(to_right=float(np.linalg.norm(left_x - right_x)),
                       to_mirror=float(np.linalg.norm(left_x + right_x)))


def _model_from_arrays(data: dict, hand: str, path: Path) -> ManoModel:
    try:
        model = ManoModel(
            hand=hand,
            v_template=data["v_template"].astype(np.float64),
            shapedirs=data["shapedirs"].astype(np.float64),
            posedirs=data["posedirs"].astype(np.float64),
            J_regressor=data["J_regressor"].astype(np.float64),
            weights=data["weights"].astype(np.float64),
            faces=data["f"].astype(np.int64),
            parents=np.asarray(data["kintree_table"])[0].astype(np.int64),
            hands_mean=data["hands_mean"].astype(np.float64).ravel(),
            hands_components=data["hands_components"].astype(np.float64),
            path=path,
        )
    except (ValueError, TypeError, IndexError) as exc:
        raise InputError(f"{path}: malformed MANO arrays ({exc})") from None
    model.parents[0] = -1  # stored as uint32 4294967295
    _check_model_shapes(model)
    return model


def load_mano_model(mano_dir: str | Path, hand: str) -> ManoModel:
    """Load MANO_<HAND>.pkl from `mano_dir`; for the left hand, fix the shapedirs defect if present.

    Loaded once per process and file version (a changed file is read again); the left check is
    logged once. The check needs MANO_RIGHT.pkl beside the left file (as the official download has).
    """
    path = Path(mano_dir) / model_filename(hand)
    try:
        stat = path.stat()
    except OSError:
        read_file_bytes(path)  # the clear "not found" error
        raise
    return _load_cached(str(path.resolve()), hand, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=8)
def _load_cached(path_str: str, hand: str, size: int, mtime_ns: int) -> ManoModel:
    """The model of one file version, shared by every caller: its arrays are made read-only, so
    no caller can change what the others see."""
    model = _load(Path(path_str), hand)
    for value in vars(model).values():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
    return model


def _load(path: Path, hand: str) -> ManoModel:
    data = read_file_bytes(path)
    model = _model_from_arrays(read_model_bytes(data, path), hand, path)
    model.sha256 = hashlib.sha256(data).hexdigest()
    if hand == "left":
        right_path = path.parent / model_filename("right")
        if not right_path.is_file():
            log.warning("%s: cannot check the left shapedirs defect without %s", path, right_path)
            return model
        right = load_mano_model(path.parent, "right")
        if right.v_template.shape == model.v_template.shape and np.allclose(right.v_template, model.v_template):
            raise InputError(f"{path}: this is the right-hand model (same template as {right_path})")
        if right.shapedirs.shape != model.shapedirs.shape:
            raise InputError(f"{path}: shapedirs {model.shapedirs.shape} do not match {right_path}'s {right.shapedirs.shape}")
        check = left_shapedirs_check(model.shapedirs, right.shapedirs)
        model.left_fix = check.defect
        if check.defect:
            model.shapedirs[:, 0, :] *= -1
        log.info("%s: shapedirs[:, 0, :] is %s (|left - right| = %.3g, |left + right| = %.3g)", path,
                 "the right model's: negated (known defect of the official left model)" if check.defect
                 else "already mirrored: kept", check.to_right, check.to_mirror)
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
    if model.faces.size and (model.faces.min() < 0 or model.faces.max() >= V):
        raise InputError(f"{model.path}: MANO faces index vertices outside 0..{V - 1}")
