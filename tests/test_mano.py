"""MANO loading (official chumpy format, left-hand defect), the synthetic model, the forward pass."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest

from interhand_prep import mano, synthetic_hand
from interhand_prep.errors import InputError


class _Stub:
    def __setstate__(self, state):
        self.__dict__.update(state)


class _PlainUnpickler(pickle.Unpickler):
    """Test-side reader: chumpy classes become stubs that this test evaluates by hand."""

    def find_class(self, module, name):
        if module.startswith("chumpy"):
            return type(name, (_Stub,), {"chumpy_name": f"{module}.{name}"})
        if module == "scipy.sparse.csc":  # old scipy's module path, deprecated today
            module = "scipy.sparse"
        return super().find_class(module, name)


def read_raw(path):
    with open(path, "rb") as f:
        return _PlainUnpickler(f, encoding="latin1").load()


def plain_copy(raw: dict) -> dict:
    """The same model with every chumpy / sparse object replaced by a plain numpy array."""
    out = {}
    for key, value in raw.items():
        if isinstance(value, _Stub):
            assert value.chumpy_name == "chumpy.reordering.Select"
            source = value.a.x
            out[key] = np.asarray(source).ravel()[value.idxs].reshape(value.preferred_shape)
        elif hasattr(value, "toarray"):
            out[key] = value.toarray()
        else:
            out[key] = value
    return out


def test_chumpy_fixture_loads_like_a_plain_numpy_copy(fixtures_dir, tmp_path):
    source = fixtures_dir / "mano_chumpy_format"
    for hand in ("right", "left"):
        raw = read_raw(source / mano.model_filename(hand))
        assert isinstance(raw["shapedirs"], _Stub)  # the fixture really is chumpy-structured
        with open(tmp_path / mano.model_filename(hand), "wb") as f:
            pickle.dump(plain_copy(raw), f, protocol=2)
    for hand in ("right", "left"):
        official = mano.load_mano_model(source, hand)
        plain = mano.load_mano_model(tmp_path, hand)
        for name in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "faces", "parents",
                     "hands_mean", "hands_components"):
            np.testing.assert_array_equal(getattr(official, name), getattr(plain, name), err_msg=f"{hand} {name}")
        assert official.parents[0] == -1 and official.parents.dtype == np.int64
        assert official.J_regressor.shape == (16, official.num_vertices)


def test_left_shapedirs_defect_is_fixed_once(fixtures_dir, tmp_path):
    source = fixtures_dir / "mano_chumpy_format"
    right_raw, left_raw = plain_copy(read_raw(source / "MANO_RIGHT.pkl")), plain_copy(read_raw(source / "MANO_LEFT.pkl"))
    # the fixture reproduces the official defect
    np.testing.assert_array_equal(left_raw["shapedirs"][:, 0, :], right_raw["shapedirs"][:, 0, :])

    left = mano.load_mano_model(source, "left")
    assert left.left_shapedirs_fixed
    np.testing.assert_array_equal(left.shapedirs[:, 0, :], -right_raw["shapedirs"][:, 0, :])
    np.testing.assert_array_equal(left.shapedirs[:, 1:, :], left_raw["shapedirs"][:, 1:, :])
    # the right model is never touched
    right = mano.load_mano_model(source, "right")
    np.testing.assert_array_equal(right.shapedirs, right_raw["shapedirs"])

    # a left file that is already correct is not negated again
    fixed = dict(left_raw, shapedirs=left.shapedirs)
    shutil.copy(source / "MANO_RIGHT.pkl", tmp_path / "MANO_RIGHT.pkl")
    with open(tmp_path / "MANO_LEFT.pkl", "wb") as f:
        pickle.dump(fixed, f, protocol=2)
    again = mano.load_mano_model(tmp_path, "left")
    assert not again.left_shapedirs_fixed
    np.testing.assert_array_equal(again.shapedirs, left.shapedirs)


def test_missing_and_wrong_model_files(fixtures_dir, tmp_path):
    with pytest.raises(InputError, match=r"MANO_RIGHT\.pkl: MANO model not found; download"):
        mano.load_mano_model(tmp_path, "right")
    shutil.copy(fixtures_dir / "mano_chumpy_format" / "MANO_RIGHT.pkl", tmp_path / "MANO_RIGHT.pkl")
    shutil.copy(fixtures_dir / "mano_chumpy_format" / "MANO_RIGHT.pkl", tmp_path / "MANO_LEFT.pkl")
    with pytest.raises(InputError, match=r"MANO_LEFT\.pkl: this is the right-hand model"):
        mano.load_mano_model(tmp_path, "left")
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(b"not a pickle")
    with pytest.raises(InputError, match=r"MANO_RIGHT\.pkl: not a readable MANO model"):
        mano.load_mano_model(tmp_path, "right")
    with open(tmp_path / "MANO_RIGHT.pkl", "wb") as f:
        pickle.dump({"v_template": np.zeros((3, 3))}, f)
    with pytest.raises(InputError, match=r"not a MANO model \(missing"):
        mano.load_mano_model(tmp_path, "right")


def test_synthetic_model_has_the_official_structure(tmp_path):
    synthetic_hand.write_synthetic_mano(tmp_path)
    for hand in ("right", "left"):
        raw = read_raw(tmp_path / mano.model_filename(hand))
        assert set(raw) == {"hands_components", "f", "J_regressor", "kintree_table", "J", "bs_style", "hands_coeffs",
                            "weights", "posedirs", "hands_mean", "v_template", "shapedirs", "bs_type"}
        assert raw["shapedirs"].chumpy_name == "chumpy.reordering.Select"
        assert type(raw["shapedirs"].a).chumpy_name == "chumpy.ch.Ch"
        assert type(raw["J_regressor"]).__name__ == "csc_matrix"
        assert raw["kintree_table"].dtype == np.uint32 and raw["kintree_table"][0, 0] == 4294967295
        assert raw["f"].dtype == np.uint32
        model = mano.load_mano_model(tmp_path, hand)
        assert model.v_template.shape == (778, 3) and model.faces.shape == (1538, 3)
        assert model.shapedirs.shape == (778, 3, 10) and model.posedirs.shape == (778, 3, 135)
        assert model.weights.shape == (778, 16) and model.J_regressor.shape == (16, 778)
        np.testing.assert_array_equal(model.parents, [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])
        np.testing.assert_allclose(model.weights.sum(1), 1.0, atol=1e-12)
        np.testing.assert_allclose(model.J_regressor.sum(1), 1.0, atol=1e-12)
    right = mano.load_mano_model(tmp_path, "right")
    left = mano.load_mano_model(tmp_path, "left")
    assert left.left_shapedirs_fixed  # the synthetic left file carries the official defect
    # after the fix the left model is the mirror image of the right one
    mirror = np.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(left.v_template, right.v_template * mirror)
    np.testing.assert_allclose(left.shapedirs, right.shapedirs * mirror[None, :, None])


def test_synthetic_mesh_is_one_manifold_with_an_open_wrist(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    model = synthetic_hand.build_right_hand()
    mesh = trimesh.Trimesh(model.v_template, model.faces, process=False)
    assert mesh.is_winding_consistent
    assert mesh.body_count == 1
    boundary = trimesh.grouping.group_rows(mesh.edges_sorted, require_count=1)
    assert len(boundary) == 16  # the wrist opening, as in the official model
    assert mesh.euler_number == 1
    # outward normals: the wrist-capped volume is positive
    capped = trimesh.Trimesh(model.v_template, model.faces, process=False)
    capped.fill_holes()
    assert capped.volume > 0


def test_fingers_bend_where_their_joints_are(tmp_path):
    synthetic_hand.write_synthetic_mano(tmp_path)
    layer = mano.ManoLayer(mano.load_mano_model(tmp_path, "right"))
    tips = {name: i for name, i in synthetic_hand.build_right_hand().tip_vertices.items()}
    flexion = np.zeros((2, 5, 3))
    flexion[1, 1] = [0.6, 0.6, 0.6]  # curl the index finger only
    fingers = synthetic_hand.finger_flexion_pose(flexion)
    pose = np.concatenate([np.zeros((2, 3)), fingers], axis=1)
    out = layer(pose, np.zeros((2, 10)), np.zeros((2, 3)))
    moved = np.linalg.norm(out.vertices[1] - out.vertices[0], axis=1)
    assert moved[tips["index"]] > 0.03  # the tip travels centimetres
    for other in ("middle", "ring", "pinky", "thumb"):
        assert moved[tips[other]] < 1e-3
    # it curls towards the palmar side (-z in the model frame)
    assert out.vertices[1, tips["index"], 2] < out.vertices[0, tips["index"], 2] - 0.02
    # the wrist joint does not move when only fingers bend
    np.testing.assert_allclose(out.joints[1, 0], out.joints[0, 0], atol=1e-12)
