"""MANO loading (official chumpy format, left-hand defect), the synthetic model, the forward pass."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest

from interhand_prep.core import mano, mano_forward
from interhand_prep.core.errors import InputError
from interhand_prep.synthetic import hand as synthetic_hand


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


def test_left_shapedirs_defect_is_fixed_once(fixtures_dir, tmp_path, caplog):
    source = fixtures_dir / "mano_chumpy_format"
    right_raw, left_raw = plain_copy(read_raw(source / "MANO_RIGHT.pkl")), plain_copy(read_raw(source / "MANO_LEFT.pkl"))
    # the fixture reproduces the official defect: the right model's column up to float noise,
    # never bit for bit (a check demanding near-equality slipped past exactly this)
    left_x, right_x = left_raw["shapedirs"][:, 0, :], right_raw["shapedirs"][:, 0, :]
    assert (left_x != right_x).all()
    assert np.abs(left_x - right_x).max() < 1e-3 * np.abs(right_x).max()

    mano._load_cached.cache_clear()  # a fresh process, as a run starts
    with caplog.at_level("INFO", logger="interhand_prep.core.mano"):
        left = mano.load_mano_model(source, "left")
        mano.load_mano_model(source, "left")  # cached: checked and logged once
    assert left.left_fix is True
    np.testing.assert_array_equal(left.shapedirs[:, 0, :], -left_x)  # the file's own column, negated
    np.testing.assert_array_equal(left.shapedirs[:, 1:, :], left_raw["shapedirs"][:, 1:, :])
    lines = [r.getMessage() for r in caplog.records if "shapedirs" in r.getMessage()]
    assert len(lines) == 1 and "negated" in lines[0] and "|left - right|" in lines[0]
    # the right model is never touched
    right = mano.load_mano_model(source, "right")
    np.testing.assert_array_equal(right.shapedirs, right_raw["shapedirs"])

    # a left file that is already correct is not negated again, with the same noise
    fixed = dict(left_raw, shapedirs=left.shapedirs)
    shutil.copy(source / "MANO_RIGHT.pkl", tmp_path / "MANO_RIGHT.pkl")
    with open(tmp_path / "MANO_LEFT.pkl", "wb") as f:
        pickle.dump(fixed, f, protocol=2)
    again = mano.load_mano_model(tmp_path, "left")
    assert again.left_fix is False
    np.testing.assert_array_equal(again.shapedirs, left.shapedirs)


@pytest.mark.parametrize("relative_noise", [0.0, 1e-9, 1e-6, 1e-3, 0.2, 0.45])
def test_defect_decision_survives_any_realistic_noise(relative_noise):
    """Nearer-of-two: the un-negated column is found, and a mirrored one kept, up to noise of
    almost the column's own size (the official files differ by ~1e-6 relative)."""
    rng = np.random.default_rng(1)
    right = rng.normal(size=(778, 3, 10)) * 5e-4
    noise = relative_noise * np.abs(right[:, 0, :]) * rng.uniform(-1, 1, size=right[:, 0, :].shape)
    defective = right.copy()
    defective[:, 0, :] += noise
    mirrored = right * np.array([-1.0, 1.0, 1.0])[None, :, None]
    mirrored[:, 0, :] += noise
    assert mano.left_shapedirs_check(defective, right).defect
    assert not mano.left_shapedirs_check(mirrored, right).defect


def test_forward_pass_equals_smplx(tmp_path, smplx_reference):
    """The numpy forward pass against smplx's MANO (the reference implementation), to 1e-6 m."""
    torch, smplx = smplx_reference
    import contextlib
    import io

    from smplx.utils import Struct

    synthetic_hand.write_synthetic_mano(tmp_path)
    rng = np.random.default_rng(4)
    for hand in ("right", "left"):
        model = mano.load_mano_model(tmp_path, hand)
        struct = Struct(v_template=model.v_template, shapedirs=model.shapedirs, posedirs=model.posedirs,
                        J_regressor=model.J_regressor, weights=model.weights, f=model.faces,
                        kintree_table=np.stack([model.parents, np.arange(16)]), hands_mean=model.hands_mean,
                        hands_components=model.hands_components)
        with contextlib.redirect_stdout(io.StringIO()):
            layer = smplx.MANO(model_path="MANO", data_struct=struct, is_rhand=hand == "right", use_pca=False,
                               flat_hand_mean=False, num_betas=10, dtype=torch.float64)
        pose, shape, trans = rng.normal(scale=0.6, size=(20, 48)), rng.normal(size=(20, 10)), rng.normal(size=(20, 3))
        t = torch.from_numpy
        with torch.no_grad():
            ref = layer(global_orient=t(pose[:, :3]), hand_pose=t(pose[:, 3:]), betas=t(shape), transl=t(trans))
        ours = mano_forward.forward(model, pose, shape, trans)
        np.testing.assert_allclose(ours.vertices, ref.vertices.numpy(), atol=1e-6, rtol=0)
        np.testing.assert_allclose(ours.joints, ref.joints.numpy(), atol=1e-6, rtol=0)
        # a frame's result does not depend on the other frames of its batch (reruns stay byte-identical)
        alone = mano_forward.forward(model, pose[7:8], shape[7:8], trans[7:8])
        np.testing.assert_array_equal(alone.vertices[0], ours.vertices[7])


def test_missing_and_wrong_model_files(fixtures_dir, tmp_path):
    with pytest.raises(InputError, match=r"MANO_RIGHT\.pkl: MANO model not found; download"):
        mano.load_mano_model(tmp_path, "right")
    shutil.copy(fixtures_dir / "mano_chumpy_format" / "MANO_RIGHT.pkl", tmp_path / "MANO_RIGHT.pkl")
    shutil.copy(fixtures_dir / "mano_chumpy_format" / "MANO_RIGHT.pkl", tmp_path / "MANO_LEFT.pkl")
    with pytest.raises(InputError, match=r"MANO_LEFT\.pkl: this is the right-hand model"):
        mano.load_mano_model(tmp_path, "left")
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(b"not a pickle")
    with pytest.raises(InputError, match=r"MANO_RIGHT\.pkl: not readable as a MANO model"):
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
    assert left.left_fix  # the synthetic left file carries the official defect, with its noise
    raw_left = read_raw(tmp_path / "MANO_LEFT.pkl")["shapedirs"]
    raw_left = np.asarray(raw_left.a.x).ravel()[raw_left.idxs].reshape(raw_left.preferred_shape)
    assert (raw_left[:, 0, :] != right.shapedirs[:, 0, :]).all()  # never bit-identical, as in the official file
    # after the fix the left model is the mirror image of the right one, up to that noise
    mirror = np.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(left.v_template, right.v_template * mirror)
    np.testing.assert_allclose(left.shapedirs, right.shapedirs * mirror[None, :, None], rtol=0,
                               atol=2.1e-4 * np.abs(right.shapedirs[:, 0, :]).max())


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
    model = mano.load_mano_model(tmp_path, "right")
    tips = {name: i for name, i in synthetic_hand.build_right_hand().tip_vertices.items()}
    flexion = np.zeros((2, 5, 3))
    flexion[1, 1] = [0.6, 0.6, 0.6]  # curl the index finger only
    fingers = synthetic_hand.finger_flexion_pose(flexion)
    pose = np.concatenate([np.zeros((2, 3)), fingers], axis=1)
    out = mano_forward.forward(model, pose, np.zeros((2, 10)), np.zeros((2, 3)))
    moved = np.linalg.norm(out.vertices[1] - out.vertices[0], axis=1)
    assert moved[tips["index"]] > 0.03  # the tip travels centimetres
    for other in ("middle", "ring", "pinky", "thumb"):
        assert moved[tips[other]] < 1e-3
    # it curls towards the palmar side (-z in the model frame)
    assert out.vertices[1, tips["index"], 2] < out.vertices[0, tips["index"], 2] - 0.02
    # the wrist joint does not move when only fingers bend
    np.testing.assert_allclose(out.joints[1, 0], out.joints[0, 0], atol=1e-12)


def test_a_model_saved_with_current_scipy_loads_without_scipy(fixtures_dir, tmp_path):
    """The sparse J_regressor is rebuilt by a stand-in from its compressed columns, whichever scipy
    wrote it (the official files: scipy.sparse.csc; a re-saved model: scipy.sparse._csc)."""
    import scipy.sparse

    raw = plain_copy(read_raw(fixtures_dir / "mano_chumpy_format" / "MANO_RIGHT.pkl"))
    regressor = raw["J_regressor"].copy()
    regressor[3, 5] = 0.25  # not only the fixture's pattern
    for protocol in (2, 4):
        with open(tmp_path / "MANO_RIGHT.pkl", "wb") as f:
            pickle.dump(dict(raw, J_regressor=scipy.sparse.csc_matrix(regressor)), f, protocol=protocol)
        mano._load_cached.cache_clear()
        model = mano.load_mano_model(tmp_path, "right")
        np.testing.assert_array_equal(model.J_regressor, regressor)
