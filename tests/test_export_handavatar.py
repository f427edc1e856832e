"""export --format handavatar: HandAvatar's and OHTA's anno_cam.pkl, images and 0/255 masks.

HandAvatar's conventions, written out plainly here (as read in its train.py and its bundled
smplx/body_models.py), not taken from the package: decimetres (metres x 10); the camera is the
identity, the mesh is their MANO + Th; their MANO is smplx's with flat_hand_mean=True, centred
on the posed joint 4, scaled by 10, with a 779th vertex (the mean of 16 wrist vertices) and the
fingertip vertices 333, 444, 672, 555, 744 after the 16 joints.
"""

from __future__ import annotations

import io
import pickle
import pickletools

import numpy as np
import pytest

from interhand_prep.core.layout import ExportLayout, SequenceLayout
from interhand_prep.core.mano import load_mano_model
from interhand_prep.core.options import ExportOptions
from interhand_prep.stages import export as export_stage

TWO = "0266_dh_pray"
SEAL = [108, 79, 78, 121, 214, 215, 279, 239, 234, 92, 38, 122, 118, 117, 119, 120]
TIPS = [333, 444, 672, 555, 744]
LABELS = {"right": 200, "left": 100}
ALLOWED_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}


@pytest.fixture(scope="module")
def exported(processed_two_hands):
    """The processed two-hand tiny sequence exported for HandAvatar (MANO masks)."""
    sel = processed_two_hands
    return sel, export_stage.export(sel, ExportOptions(format="handavatar", masks="mano"), progress=False)


class _Numpy1Only(pickle.Unpickler):
    """Loads what numpy 1.23 can: the numpy-1 names of arrays and dtypes, nothing else."""

    def find_class(self, module, name):
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not loadable by numpy 1.23")
        import importlib  # numpy 2 still resolves the numpy-1 module names

        return getattr(importlib.import_module(module), name)


def _anno(out: ExportLayout, hand: str) -> tuple[dict, dict, dict, list]:
    data = out.handavatar_anno(hand, "train", 0, TWO).read_bytes()
    assert b"numpy._core" not in data
    import warnings

    assert pickletools.genops(data).__next__()[1] == 4  # protocol 4: 5 would name numpy._core.numeric
    # every global the pickle names goes through find_class: the allow-list
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        return _Numpy1Only(io.BytesIO(data)).load()


def _their_mano(reference, model, poses: np.ndarray, shape: np.ndarray):
    """HandAvatar's MANO from smplx's (flat_hand_mean=True) -> joints 21x3, vertices 779x3, dm.
    `reference`: the smplx_reference fixture, (torch, smplx)."""
    torch, smplx = reference
    import contextlib

    from smplx.utils import Struct

    struct = Struct(v_template=model.v_template, shapedirs=model.shapedirs, posedirs=model.posedirs,
                    J_regressor=model.J_regressor, weights=model.weights, f=model.faces,
                    kintree_table=np.stack([model.parents, np.arange(16)]), hands_mean=model.hands_mean,
                    hands_components=model.hands_components)
    with contextlib.redirect_stdout(io.StringIO()):
        layer = smplx.MANO(model_path="MANO", data_struct=struct, is_rhand=model.hand == "right", use_pca=False,
                           flat_hand_mean=True, num_betas=10, dtype=torch.float64)
    with torch.no_grad():
        out = layer(global_orient=torch.from_numpy(poses[None, :3]), hand_pose=torch.from_numpy(poses[None, 3:]),
                    betas=torch.from_numpy(shape[None]))
    joints, vertices = out.joints[0].numpy()[:16], out.vertices[0].numpy()
    centre = joints[4]
    joints, vertices = (joints - centre) * 10.0, (vertices - centre) * 10.0
    vertices = np.concatenate([vertices, vertices[SEAL].mean(0, keepdims=True)])
    return np.concatenate([joints, vertices[TIPS]]), vertices


def _our_vertices_dm(layout: SequenceLayout, annots: dict, hand: str, view: str) -> tuple[str, int, np.ndarray]:
    """(camera, frame, our vertices of the view's hand in its camera frame, decimetres) of a view
    named as HandAvatar names it: X_cam = R X_world + T (mm), / 100."""
    cam, frame = view.split("/")[3][3:], int(view.split("/")[4][5:9])
    R, T = (np.asarray(annots["cams"][k][cam], dtype=np.float64) for k in ("R", "T"))
    return cam, frame, (np.load(layout.vertices(hand, frame)).astype(np.float64) * 1000.0 @ R.T + T.reshape(3)) / 100.0


def test_fields_dtypes_and_pickle(exported):
    sel, result = exported
    out = ExportLayout(result.dest)
    cams, frames = sel.layout.read_cams(), sel.layout.read_frames()
    for hand in ("right", "left"):
        cameras, mesh_infos, boxes, framelist = _anno(out, hand)
        assert framelist and set(framelist) == set(cameras) == set(mesh_infos) == set(boxes)
        assert framelist == sorted(framelist, key=lambda v: (v.split("/")[3], v))  # camera-major
        for view in framelist:
            split, capture, seq, cam, image = view.split("/")
            assert (split, capture, seq) == ("train", "Capture0", TWO) and cam[3:] in cams
            assert int(image[5:9]) in frames and image.endswith(".jpg")
            camera, info, box = cameras[view], mesh_infos[view], boxes[view]
            assert camera["intrinsics"].dtype == np.float64 and camera["intrinsics"].shape == (3, 3)
            assert (camera["extrinsics"] == np.eye(4)).all() and (camera["distortions"] == 0).all()
            expected = {"Rh": (np.float64, (3,)), "Th": (np.float32, (3,)), "poses": (np.float64, (48,)),
                        "shape": (np.float64, (10,)), "joints": (np.float32, (21, 3)),
                        "tpose_joints": (np.float32, (21, 3)), "joint_img": (np.int32, (21, 2)),
                        "joint_cam": (np.float32, (21, 3)), "joint_valid": (np.float64, (21, 1))}
            for key, (dtype, shape) in expected.items():
                assert info[key].dtype == dtype and info[key].shape == shape, key
            assert set(info["bbox"]) == {"min_xyz", "max_xyz"} and info["bbox"]["min_xyz"].dtype == np.float32
            assert box.dtype == np.float64 and box.shape == (4,) and box[2] == box[3] > 0
            assert np.abs(info["joints"][4]).max() < 1e-6  # centred on the middle knuckle
    # the allow-list refuses what numpy 2's own pickler writes (numpy._core names)
    with pytest.raises(pickle.UnpicklingError, match="numpy._core"):
        _Numpy1Only(io.BytesIO(pickle.dumps([np.zeros(3, np.float32)], protocol=4))).load()
    # two-hand frames and mono cameras are kept (HandAvatar's own preprocessing drops both)
    right = set(_anno(out, "right")[3])
    left = set(_anno(out, "left")[3])
    assert right & left
    assert any("/cam410214/" in v for v in right)


def _per_hand(exported):
    """(our layout, annots.npy, hand, its MANO model, the export's anno_cam.pkl) for each hand."""
    sel, result = exported
    annots = sel.layout.read_annots()
    for hand in ("right", "left"):
        yield sel.layout, annots, hand, load_mano_model(sel.mano_dir, hand), _anno(ExportLayout(result.dest), hand)


def test_mesh_lands_on_our_vertices_and_projects_like_annots(exported, smplx_reference):
    for layout, annots, hand, model, (cameras, mesh_infos, _, framelist) in _per_hand(exported):
        for view in framelist[::3]:
            _, _, ours = _our_vertices_dm(layout, annots, hand, view)
            info = mesh_infos[view]
            joints, vertices = _their_mano(smplx_reference, model, info["poses"], info["shape"])
            np.testing.assert_allclose(info["joints"], joints, atol=1e-5)
            tpose, _ = _their_mano(smplx_reference, model, np.zeros(48), info["shape"])
            np.testing.assert_allclose(info["tpose_joints"], tpose, atol=1e-5)
            np.testing.assert_allclose(vertices[:778] + info["Th"], ours, atol=2e-4)  # dm: 20 micrometres
            K = cameras[view]["intrinsics"]
            cam_points = vertices[:778] + info["Th"]
            uv = cam_points @ K.T
            annot_uv = ours * 100.0 @ K.T
            assert np.abs(uv[:, :2] / uv[:, 2:] - annot_uv[:, :2] / annot_uv[:, 2:]).max() < 1e-3  # px, as every format
            np.testing.assert_allclose(info["bbox"]["min_xyz"], vertices.min(0) - 0.01, atol=1e-5)


def test_convention_mistakes_are_caught(exported, smplx_reference):
    """Wrong variants written by hand (no hands_mean, metres, world orientation, the right model for
    the left hand) move the mesh off our vertices."""
    for layout, annots, hand, model, (_, mesh_infos, _, framelist) in _per_hand(exported):
        view = framelist[0]
        _, frame, ours = _our_vertices_dm(layout, annots, hand, view)
        info = mesh_infos[view]
        params = layout.read_params(layout.params(hand, frame))

        def error(poses, scale=1.0, used=model):
            _, vertices = _their_mano(smplx_reference, used, poses, info["shape"])
            return np.abs(vertices[:778] * scale + info["Th"] - ours).max()

        assert error(info["poses"]) < 2e-4
        no_mean = info["poses"].copy()
        no_mean[3:] -= model.hands_mean
        world = info["poses"].copy()
        world[:3] = params["Rh"].reshape(3)
        other = load_mano_model(exported[0].mano_dir, "right" if hand == "left" else "left")
        assert error(no_mean) > 0.02, "hands_mean"
        assert error(info["poses"], scale=0.1) > 0.02, "decimetres"
        assert error(world) > 0.02, "camera frame"
        assert error(info["poses"], used=other) > 0.02, "left mirror"


def test_masks_are_the_hand_s_own_pixels_0_or_255(exported):
    from PIL import Image

    sel, result = exported
    layout = sel.layout
    out = ExportLayout(result.dest)
    for hand in ("right", "left"):
        framelist = _anno(out, hand)[3]
        for view in framelist[::4]:
            cam, frame = view.split("/")[3][3:], int(view.split("/")[4][5:9])
            ours = np.asarray(Image.open(layout.mask(cam, frame)))
            theirs = np.asarray(Image.open(out.handavatar_mask(hand, view)))
            sam = np.asarray(Image.open(out.handavatar_mask(hand, view, "masks_SAM")))
            assert set(np.unique(theirs)) <= {0, 255}
            assert ((theirs == 255) == (ours == LABELS[hand])).all() and (sam == theirs).all()
            assert out.handavatar_image(hand, view).resolve() == layout.image(cam, frame).resolve()


def test_reruns_and_refusals(exported, tmp_path):
    from interhand_prep.core.errors import InputError

    sel, result = exported
    again = export_stage.export(sel, ExportOptions(format="handavatar", masks="mano"), progress=False)
    assert again.up_to_date
    out = ExportLayout(result.dest)
    out.handavatar_anno("left", "train", 0, TWO).unlink()
    rebuilt = export_stage.export(sel, ExportOptions(format="handavatar", masks="mano"), progress=False)
    assert not rebuilt.up_to_date and out.handavatar_anno("left", "train", 0, TWO).is_file()
    merged = SequenceLayout(tmp_path / "merge" / "m")
    with pytest.raises(InputError, match="needs a sequence folder"):
        export_stage._sequence_name(merged)


def _their_process_bbox(bbox, width, height):
    """HandAvatar's augm_util.process_bbox, written out: clamp, then square about the centre."""
    x, y, w, h = bbox
    x1, y1 = np.max((0, x)), np.max((0, y))
    x2, y2 = np.min((width - 1, x1 + np.max((0, w - 1)))), np.min((height - 1, y1 + np.max((0, h - 1))))
    box = np.array([x1, y1, x2 - x1, y2 - y1])
    w, h = box[2], box[3]
    c_x, c_y = box[0] + w / 2.0, box[1] + h / 2.0
    if w > h:
        h = w
    elif w < h:
        w = h
    return np.array([c_x - w / 2.0, c_y - h / 2.0, w, h])


def test_boxes_are_the_annotated_ones_made_square(exported):
    import json

    sel, result = exported
    data = json.loads((sel.basedir / "annotations/train/InterHand2.6M_train_data.json").read_text())
    images = {im["id"]: im for im in data["images"]}
    annotated = {(images[a["image_id"]]["seq_name"], images[a["image_id"]]["camera"], images[a["image_id"]]["frame_idx"]):
                 (a["bbox"], images[a["image_id"]]["width"], images[a["image_id"]]["height"]) for a in data["annotations"]}
    out = ExportLayout(result.dest)
    for hand in ("right", "left"):
        _, _, boxes, framelist = _anno(out, hand)
        for view in framelist:
            _, _, seq, cam, image = view.split("/")
            bbox, width, height = annotated[(seq, cam[3:], int(image[5:9]))]
            np.testing.assert_allclose(boxes[view], _their_process_bbox(np.array(bbox, np.float32), width, height),
                                       atol=1e-4)


def test_the_box_cache_reads_real_data_json(fixtures_dir):
    import json

    from interhand_prep.core import annotation_cache

    path = fixtures_dir / "interhand2.6m_real" / "test_interhand2.6m_data.json"
    data = json.loads(path.read_text())
    for annotation in data["annotations"]:
        image = next(im for im in data["images"] if im["id"] == annotation["image_id"])
        boxes = annotation_cache.load_capture_boxes(path, image["capture"])
        np.testing.assert_allclose(boxes.box(image["seq_name"], image["camera"], image["frame_idx"]),
                                   annotation["bbox"])
        assert boxes.box(image["seq_name"], image["camera"], image["frame_idx"] + 1) is None
