"""Skinning grids against a brute-force point-to-triangle reference, and the prepare_blend_weights stage."""

from __future__ import annotations

import numpy as np
import pytest

from interhand_prep.core import skinning
from interhand_prep.core.errors import InputError
from interhand_prep.core.layout import SequenceLayout
from interhand_prep.core.mano import load_mano_model
from interhand_prep.core.options import BlendWeightOptions
from interhand_prep.stages import get_annots as annots
from interhand_prep.stages import prepare_blend_weights as blend_weights


def closest_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest point of every point (P) on every triangle (F), plainly (Ericson, Real-Time Collision
    Detection 5.1.5): -> squared distances PxF and barycentric coordinates PxFx3."""
    p = p[:, None, :]
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp = p - b
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    cp = p - c
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    shape = d1.shape
    bary = np.zeros(shape + (3,))
    done = np.zeros(shape, bool)

    def region(mask, u, v, w):
        nonlocal done
        m = mask & ~done
        bary[m] = np.stack([u, v, w], -1)[m] if np.ndim(u) else np.array([u, v, w])
        done |= m

    with np.errstate(divide="ignore", invalid="ignore"):
        ones, zeros = np.ones(shape), np.zeros(shape)
        region((d1 <= 0) & (d2 <= 0), ones, zeros, zeros)                          # vertex a
        region((d3 >= 0) & (d4 <= d3), zeros, ones, zeros)                         # vertex b
        t = d1 / (d1 - d3)
        region((vc <= 0) & (d1 >= 0) & (d3 <= 0), 1 - t, t, zeros)                # edge ab
        region((d6 >= 0) & (d5 <= d6), zeros, zeros, ones)                         # vertex c
        t = d2 / (d2 - d6)
        region((vb <= 0) & (d2 >= 0) & (d6 <= 0), 1 - t, zeros, t)                # edge ac
        t = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        region((va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0), zeros, 1 - t, t)  # edge bc
        denom = va + vb + vc
        v, w = vb / denom, vc / denom
        region(np.ones(shape, bool), 1 - v - w, v, w)                              # inside
    closest = bary[..., 0:1] * a + bary[..., 1:2] * b + bary[..., 2:3] * c
    return ((closest - p) ** 2).sum(-1), bary


def brute_force_weights(points, vertices, faces, weights):
    """Distance to the surface P, and the weights PxFxJ at every face's closest point with a mask PxF
    of the faces that are closest (several when the closest point is a shared vertex or edge, or
    when two surface points are equally close)."""
    sq, bary = closest_on_triangles(points, *(vertices[faces[:, k]] for k in range(3)))
    best = sq.min(1)
    per_face = np.einsum("pfk,fkj->pfj", bary, weights[faces])
    ties = sq <= best[:, None] + 1e-14
    return np.sqrt(best), per_face, ties


def assert_matches_a_closest_face(ours, per_face, ties, atol=1e-6):
    """ours PxJ must equal the values at the closest point of one of the closest faces."""
    error = np.abs(per_face - ours[:, None, :]).max(-1)
    error[~ties] = np.inf
    assert error.min(1).max() <= atol, f"max error {error.min(1).max():.2e}"


@pytest.fixture(scope="module")
def small_model(fixtures_dir):
    return load_mano_model(fixtures_dir / "mano_chumpy_format", "right")


def test_canonical_grid_matches_brute_force(small_model):
    tbw = skinning.canonical_grid(small_model, 0.01, 0.02)
    axes = [np.arange(lo - 0.02, hi + 0.02 + 0.01, 0.01)
            for lo, hi in zip(small_model.v_template.min(0), small_model.v_template.max(0))]
    assert tbw.shape == tuple(len(a) for a in axes) + (17,) and tbw.dtype == np.float32
    points = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    distance, per_face, ties = brute_force_weights(points, small_model.v_template, small_model.faces, small_model.weights)
    flat = tbw.reshape(-1, 17)
    np.testing.assert_allclose(flat[:, 16], distance, atol=1e-6)
    assert_matches_a_closest_face(flat[:, :16].astype(np.float64), per_face, ties)
    np.testing.assert_allclose(flat[:, :16].sum(1), 1.0, atol=1e-6)


def test_distance_is_zero_on_the_surface(small_model):
    v, f = small_model.v_template, small_model.faces
    on_surface = np.concatenate([v, v[f].mean(1), 0.5 * (v[f[:, 0]] + v[f[:, 1]])])
    closest = skinning.closest_surface(on_surface, v, f)
    np.testing.assert_allclose(closest.distance, 0.0, atol=1e-9)
    # at a vertex the interpolated weights are that vertex's weights
    np.testing.assert_allclose(closest.interpolate(f, small_model.weights)[: len(v)], small_model.weights, atol=1e-9)


def test_frame_grids_match_brute_force_on_several_frames(small_model):
    rng = np.random.default_rng(0)
    N = 3
    poses = np.concatenate([np.zeros((N, 3)), rng.normal(scale=0.3, size=(N, 45))], 1)
    shapes = rng.normal(size=(N, 10))
    # pose-space vertices from the model's own forward pass, as get_annots writes them
    from interhand_prep.core.mano_forward import forward

    posed = forward(small_model, np.concatenate([np.zeros((N, 3)), poses[:, 3:] - small_model.hands_mean], 1), shapes,
                    np.zeros((N, 3))).vertices
    unposed = skinning.unposed_vertices(small_model, posed, poses, shapes)

    # inverse skinning recovers the template plus the blend shapes, computed plainly here
    from scipy.spatial.transform import Rotation  # scipy's Rodrigues: an implementation independent of ours

    rot = Rotation.from_rotvec(poses.reshape(-1, 3)).as_matrix().reshape(N, 16, 3, 3)
    pose_feature = (rot[:, 1:] - np.eye(3)).reshape(N, -1)
    expected_offsets = (np.einsum("vck,nk->nvc", small_model.shapedirs, shapes)
                        + np.einsum("vck,nk->nvc", small_model.posedirs, pose_feature))
    np.testing.assert_allclose(unposed - small_model.v_template, expected_offsets, atol=1e-7)

    for surface in (False, True):
        grids = [skinning.frame_grids(small_model, posed[n], unposed[n], 0.012, 0.02, surface) for n in range(N)]
        bweights, bs = [g[0] for g in grids], [g[1] for g in grids]
        for n in range(N):
            grid = skinning.grid_points(skinning.grid_axes(posed[n], 0.012, 0.02))
            points = grid.reshape(-1, 3)
            assert bweights[n].shape == grid.shape[:3] + (17,)
            flat = bweights[n].reshape(-1, 17)
            if surface:
                distance, per_face, ties = brute_force_weights(points, posed[n], small_model.faces, small_model.weights)
                np.testing.assert_allclose(flat[:, 16], distance, atol=1e-6)
                assert_matches_a_closest_face(flat[:, :16].astype(np.float64), per_face, ties)
            else:
                d = np.linalg.norm(points[:, None] - posed[n][None], axis=-1)
                np.testing.assert_allclose(flat[:, 16], d.min(1), atol=1e-6)
                unique = (np.sort(d, 1)[:, 1] - d.min(1)) > 1e-9
                np.testing.assert_allclose(flat[unique, :16], small_model.weights[d.argmin(1)][unique], atol=1e-6)
            np.testing.assert_allclose(flat[:, :16].sum(1), 1.0, atol=1e-6)

            ugrid = skinning.grid_points(skinning.grid_axes(unposed[n], 0.012, 0.02))
            assert bs[n].shape == ugrid.shape and bs[n].dtype == np.float32
            upoints = ugrid.reshape(-1, 3)
            _, per_face, ties = brute_force_weights(upoints, unposed[n], small_model.faces, expected_offsets[n])
            assert_matches_a_closest_face(bs[n].reshape(-1, 3).astype(np.float64), per_face, ties)


def test_stage_writes_both_hands_with_the_documented_shapes(helpers, capture):
    sel = helpers.selector(capture, "0266_dh_pray", hand_type="both")
    frames = annots.run(sel, progress=False).frames
    result = blend_weights.run(sel, progress=False)
    assert result.written == {"right": len(frames), "left": len(frames)}
    layout = sel.layout
    for hand in ("right", "left"):
        model = load_mano_model(capture / "mano", hand)
        lbs = layout.lbs_dir(hand)
        faces, parents = np.load(lbs / "faces.npy"), np.load(lbs / "parents.npy")
        assert faces.shape == (1538, 3) and np.issubdtype(faces.dtype, np.integer)
        assert parents.dtype == np.int64 and parents.tolist() == [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]
        assert np.load(lbs / "weights.npy").shape == (778, 16)
        np.testing.assert_allclose(np.load(lbs / "tvertices.npy"), model.v_template, atol=1e-7)
        first = SequenceLayout.read_params(layout.params(hand, frames[0]))
        shaped = model.v_template + model.shapedirs @ first["shapes"][0].astype(np.float64)
        np.testing.assert_allclose(np.load(lbs / "joints.npy"), model.J_regressor @ shaped, atol=1e-6)
        tbw = np.load(lbs / "tbw.npy")
        assert tbw.ndim == 4 and tbw.shape[3] == 17 and tbw.dtype == np.float32
        for frame in frames:
            bw = np.load(layout.bweights(hand, frame))
            bs = np.load(layout.bs(hand, frame))
            assert bw.ndim == 4 and bw.shape[3] == 17 and bw.dtype == np.float32
            assert bs.ndim == 4 and bs.shape[3] == 3 and bs.dtype == np.float32
            # the grid contains the frame's pose-space vertices
            params = SequenceLayout.read_params(layout.params(hand, frame))
            vertices = np.load(layout.vertices(hand, frame)).astype(np.float64)
            posed = skinning.pose_space_vertices(vertices[None], params["Rh"].astype(np.float64),
                                                 params["Th"].astype(np.float64))[0]
            axes = skinning.grid_axes(posed, 0.025, 0.05)
            assert bw.shape[:3] == tuple(len(a) for a in axes)
            np.testing.assert_allclose(bw[..., :16].sum(-1), 1.0, atol=1e-5)
    # a rerun finds every frame up to date and touches nothing
    stamps = {p: p.stat().st_mtime_ns for p in layout.root.joinpath("lbs").rglob("*.npy")}
    again = blend_weights.run(sel, progress=False)
    assert again.up_to_date and again.skipped == {"right": len(frames), "left": len(frames)}
    assert {p: p.stat().st_mtime_ns for p in layout.root.joinpath("lbs").rglob("*.npy")} == stamps


@pytest.mark.parametrize("case,message", [
    ("missing_params", r"params/right/\d+\.npy: file not found"),
    ("bad_params", r"params/right/\d+\.npy: 'Rh' has shape \(1, 2\), expected \(1, 3\)"),
    ("bad_vertices", r"vertices/right/\d+\.npy: vertices have shape \(10, 3\), expected \(778, 3\)"),
    ("truncated_vertices", r"vertices/right/\d+\.npy: not a readable \.npy file"),
    ("no_annots", r"frames.txt: not found \(run get_annots.py first\)"),
])
def test_bad_inputs_name_the_file(helpers, capture, case, message):
    sel = helpers.selector(capture, "0051_dinosaur")
    if case != "no_annots":
        frames = annots.run(sel, progress=False).frames
        layout = sel.layout
        frame = frames[len(frames) // 2]
        if case == "missing_params":
            layout.params("right", frame).unlink()
        elif case == "bad_params":
            params = SequenceLayout.read_params(layout.params("right", frame))
            params["Rh"] = np.zeros((1, 2), np.float32)
            np.save(layout.params("right", frame), params, allow_pickle=True)
        elif case == "bad_vertices":
            np.save(layout.vertices("right", frame), np.zeros((10, 3), np.float32))
        elif case == "truncated_vertices":
            path = layout.vertices("right", frame)
            path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(InputError, match=message):
        blend_weights.run(sel, progress=False)


@pytest.mark.parametrize("voxel,padding", [(0.0, 0.05), (-0.01, 0.05), (0.025, -1.0)])
def test_invalid_grid_options(helpers, capture, voxel, padding):
    with pytest.raises(InputError, match="--voxel-size|--padding"):
        blend_weights.run(helpers.selector(capture, "0051_dinosaur"), BlendWeightOptions(voxel_size=voxel, padding=padding))
