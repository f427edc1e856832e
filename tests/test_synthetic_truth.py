"""The fit_error appearance of the synthetic capture: a true hand off the annotated MANO fit,
drawn with forearms and clutter, and its true masks beside the dataset."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import orjson
import pytest
from PIL import Image

from interhand_prep.core import dataset
from interhand_prep.core.fit_quality import REGRESSOR_NAME, load_joint_regressor, regress_joints
from interhand_prep.core.mano import load_mano_model
from interhand_prep.core.mano_forward import forward
from interhand_prep.synthetic import scene
from interhand_prep.synthetic.capture import CaptureSpec, SequenceSpec, generate_capture, truth_mask_path

ONE, TWO = "0051_dinosaur", "0266_dh_pray"
CAMERAS = ["400002", "410214", "400412", "400016"]  # portrait RGB, portrait mono, landscape RGB; 400016: no images


def _spec(appearance: str) -> CaptureSpec:
    return CaptureSpec(capture=0, seed=5, camera_ids=list(CAMERAS), image_scale=0.25, default_cases=False,
                       appearance=appearance, render_workers=1,
                       sequences=[SequenceSpec(TWO, "both", 3), SequenceSpec(ONE, "right", 3)],
                       null_mano={TWO: {1: ["left"]}}, black={TWO: {2: ["400002"]}},
                       missing_images={ONE: {1: ["410214"]}}, cameras_without_images=["400016"])


@pytest.fixture(scope="module")
def fit_error(tmp_path_factory, gl_platform):
    root = tmp_path_factory.mktemp("fit_error")
    manifest = generate_capture(root / "IH", root / "mano", _spec("fit_error"))
    return SimpleNamespace(root=root, basedir=root / "IH", manifest=manifest)


def _views(m):
    """(seq, cam, frame, image path) of every image written."""
    for seq, frames in m.frames.items():
        for frame in frames:
            for cam in m.cameras.ids:
                path = dataset.image_path(m.basedir, "train", 0, seq, cam, frame)
                if path.exists():
                    yield seq, cam, frame, path


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


class _Rig:  # what the ray cast needs of a layout: the cameras
    def __init__(self, cameras):
        self.cameras = cameras

    def read_cameras(self):
        return self.cameras


def test_truth_masks_exist_beside_the_data_with_hand_labels_only(fit_error):
    m = fit_error.manifest
    views = list(_views(m))
    assert len(views) == 2 * 3 * 3 - 1  # 3 cameras with images x 3 frames x 2 sequences, one image missing
    labels_seen = {TWO: set(), ONE: set()}
    for seq, cam, frame, image_path in views:
        truth_path = truth_mask_path(fit_error.basedir, "train", 0, seq, cam, frame)
        assert truth_path == fit_error.basedir / "synthetic_truth" / "train" / "Capture0" / seq / f"cam{cam}" / \
            f"image{frame:04d}.png"
        truth = _read(truth_path)
        assert truth.dtype == np.uint8 and truth.shape == _read(image_path).shape[:2]
        assert set(np.unique(truth)) <= {0, 100, 200}
        labels_seen[seq] |= set(np.unique(truth).tolist())
    assert labels_seen[TWO] == {0, 100, 200}
    assert labels_seen[ONE] == {0, 200}  # the other hand of a one-hand sequence is not a hand of it
    # no truth where no image is written, nor anything in the dataset's own layout
    assert not (fit_error.basedir / "synthetic_truth" / "train" / "Capture0" / ONE / "cam400016").exists()
    missing = truth_mask_path(fit_error.basedir, "train", 0, ONE, "410214", m.frames[ONE][1])
    assert not missing.exists() and not dataset.image_path(fit_error.basedir, "train", 0, ONE, "410214",
                                                           m.frames[ONE][1]).exists()
    assert not list((fit_error.basedir / "images").rglob("*.png"))


def test_special_cases_keep_working(fit_error):
    m = fit_error.manifest
    black = _read(dataset.image_path(fit_error.basedir, "train", 0, TWO, "400002", m.frames[TWO][2]))
    assert black.max() == 0
    mono = _read(dataset.image_path(fit_error.basedir, "train", 0, TWO, "410214", m.frames[TWO][0])).astype(int)
    assert np.abs(mono[..., 0] - mono[..., 1]).max() <= 2 and np.abs(mono[..., 0] - mono[..., 2]).max() <= 2
    mano = orjson.loads((fit_error.basedir / "annotations" / "train" / "InterHand2.6M_train_MANO_NeuralAnnot.json")
                        .read_bytes())["0"]
    assert mano[str(m.frames[TWO][1])]["left"] is None
    # the true left hand is still drawn (and in the truth) in the frame whose MANO entry is null
    shown = [_read(truth_mask_path(fit_error.basedir, "train", 0, TWO, cam, m.frames[TWO][1]))
             for cam in CAMERAS[:3]]
    assert any((t == 100).any() for t in shown)


def test_the_true_hand_is_off_the_annotated_fit_by_the_documented_error(fit_error):
    m = fit_error.manifest
    lo, hi = scene.JOINT_ERROR_RANGE_MM
    assert (lo, hi) == (3.5, 6.5)
    mano_json = orjson.loads((fit_error.basedir / "annotations" / "train" /
                              "InterHand2.6M_train_MANO_NeuralAnnot.json").read_bytes())["0"]
    mano_dir = fit_error.root / "mano"
    regressor = load_joint_regressor(mano_dir / REGRESSOR_NAME, 778)
    checked = 0
    for seq, frames in m.frames.items():
        for k, frame in enumerate(frames):
            for hand, error in m.true_joint_errors[seq][frame].items():
                assert lo <= error <= hi
                entry = mano_json[str(frame)][hand]
                if entry is None:
                    continue
                annotated = forward(load_mano_model(mano_dir, hand), np.array(entry["pose"])[None],
                                    np.array(entry["shape"])[None], np.array(entry["trans"])[None]).vertices
                true = m.true_vertices[seq][hand][k][None]
                measured = np.linalg.norm(regress_joints(regressor, true) - regress_joints(regressor, annotated),
                                          axis=2).mean()
                assert measured == pytest.approx(error, abs=1e-6)
                checked += 1
    assert checked == 8  # every hand with a MANO entry (one left hand has none)


def _silhouette(m, cam, meshes, helpers, size):
    """The labels (0, 100, 200) of `meshes` {hand: (vertices, faces)} seen from `cam`, by the CPU ray
    cast of the test helpers (pixel centres, nearest hit)."""
    return helpers.ray_cast(_Rig(m.cameras), None, cam, 0, size[0], size[1], meshes=meshes)[0]


def test_truth_is_the_visible_true_hand_and_differs_from_the_mano_silhouette(fit_error, helpers):
    m = fit_error.manifest
    mano_json = orjson.loads((fit_error.basedir / "annotations" / "train" /
                              "InterHand2.6M_train_MANO_NeuralAnnot.json").read_bytes())["0"]
    mano_dir = fit_error.root / "mano"
    faces = {hand: load_mano_model(mano_dir, hand).faces for hand in ("left", "right")}
    ious, hidden_share = [], []
    for seq, cam, frame, image_path in _views(m):
        truth = _read(truth_mask_path(fit_error.basedir, "train", 0, seq, cam, frame))
        size = truth.shape[::-1]
        k = m.frames[seq].index(frame)
        true_meshes = {hand: (v[k], faces[hand]) for hand, v in m.true_vertices[seq].items()}
        true_labels = _silhouette(m, cam, true_meshes, helpers, size)
        # every truth pixel shows the true hand that the CPU ray cast finds there (an edge pixel or
        # two may round the other way); true hand pixels missing from the truth are occluded
        hand = truth > 0
        assert np.count_nonzero(true_labels[hand] != truth[hand]) <= 2
        if true_labels.any():
            hidden_share.append(np.count_nonzero((true_labels > 0) & ~hand) / np.count_nonzero(true_labels))
        annotated = {hand: (forward(load_mano_model(mano_dir, hand), np.array(e["pose"])[None],
                                    np.array(e["shape"])[None], np.array(e["trans"])[None]).vertices[0], faces[hand])
                     for hand, e in mano_json[str(frame)].items() if e is not None}
        if len(annotated) < len(true_meshes) or not hand.any():
            continue
        mano_labels = _silhouette(m, cam, annotated, helpers, size)
        union = np.count_nonzero(hand | (mano_labels > 0))
        ious.append(np.count_nonzero(hand & (mano_labels == truth)) / union)
    assert len(ious) >= 10
    # the MANO silhouette overlaps the truth substantially but never matches it
    assert 0.6 < np.mean(ious) < 0.93 and max(ious) < 0.97
    assert np.median(hidden_share) < 0.15  # most of the true hand is visible in most views


def test_the_forearm_is_drawn_in_the_image_but_is_not_hand(fit_error):
    m = fit_error.manifest
    ring = scene.boundary_loop(load_mano_model(fit_error.root / "mano", "right").faces)
    seen = skin_like = 0
    for seq, cam, frame, image_path in _views(m):
        image = _read(image_path).astype(float)
        if image.max() == 0:
            continue  # a black frame
        truth = _read(truth_mask_path(fit_error.basedir, "train", 0, seq, cam, frame))
        verts = m.true_vertices[seq]["right"][m.frames[seq].index(frame)] * 1000.0
        centre = verts[ring].mean(0)  # the open wrist of the true hand, and the direction away from it
        _, _, vt = np.linalg.svd(verts[ring] - centre)
        axis = vt[2] if vt[2].dot(centre - verts.mean(0)) > 0 else -vt[2]
        pixels, _ = m.cameras.subset([cam]).project(centre + np.outer([25.0, 40.0], axis))
        h, w = truth.shape
        for x, y in np.rint(pixels[0]).astype(int):
            if 0 <= x < w and 0 <= y < h:
                seen += 1
                assert truth[y, x] != 200  # nothing beyond the wrist is the right hand
                r, g, b = image[y, x]
                skin_like += truth[y, x] == 0 and (r + g + b) / 3 > 45 and r >= b  # lit skin, not the dark studio
    assert seen >= 8
    assert skin_like >= 0.6 * seen


def test_default_appearance_is_plain_and_writes_no_truth(fit_error, tmp_path):
    assert CaptureSpec().appearance == "plain"
    plain = generate_capture(tmp_path / "IH", tmp_path / "mano", _spec("plain"))
    assert not (tmp_path / "IH" / "synthetic_truth").exists()
    assert plain.true_joint_errors == {} and plain.true_params == {}
    # the annotated MANO parameters and joints are those of the plain mode, the images are not
    for name in ("MANO_NeuralAnnot", "joint_3d"):
        rel = Path("annotations") / "train" / f"InterHand2.6M_train_{name}.json"
        assert (tmp_path / "IH" / rel).read_bytes() == (fit_error.basedir / rel).read_bytes()
    rel = dataset.image_path(Path("."), "train", 0, TWO, "400002", plain.frames[TWO][0])
    assert (tmp_path / "IH" / rel).read_bytes() != (fit_error.basedir / rel).read_bytes()
    with pytest.raises(ValueError, match="appearance"):
        generate_capture(tmp_path / "x", tmp_path / "mano", CaptureSpec(appearance="fancy"))
