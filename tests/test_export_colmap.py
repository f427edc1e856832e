"""export --format colmap: a COLMAP model per frame, read back with pycolmap (from PyPI) and with a
reader of the binary format written out here, and re-projected against annots.npy.

COLMAP's conventions, written out plainly (not taken from the package): a quaternion (qw, qx,
qy, qz) and t give X_cam = R(q) X_world + t, metres; a PINHOLE camera puts the centre of the
top-left pixel at (0.5, 0.5): u = fx x / z + cx, and annots.npy's pixel is u - 0.5.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from interhand_prep.core.errors import InputError
from interhand_prep.core.layout import ExportLayout, SequenceLayout
from interhand_prep.core.options import ExportOptions
from interhand_prep.stages import export as export_stage

TWO = "0266_dh_pray"
TOLERANCE_PX = 1e-3


@pytest.fixture
def processed(processed_two_hands):
    return processed_two_hands


def _annots_projection(annots: dict, cam: str, points_m: np.ndarray) -> np.ndarray:
    K, R, T = (np.asarray(annots["cams"][k][cam], dtype=np.float64) for k in ("K", "R", "T"))
    x = points_m * 1000.0 @ R.T + T.reshape(1, 3)
    uv = x @ K.T
    return uv[:, :2] / uv[:, 2:3]


def _quaternion_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def _read_model(folder) -> tuple[dict, dict, dict]:
    """cameras {id: (model, w, h, params)}, images {id: (q, t, camera, name, xy, ids)},
    points {id: (xyz, rgb, track)} from the three .bin files (COLMAP's reconstruction_io.cc)."""
    def reader(name):
        data = (folder / f"{name}.bin").read_bytes()
        pos = 0

        def take(fmt):
            nonlocal pos
            values = struct.unpack_from("<" + fmt, data, pos)
            pos += struct.calcsize("<" + fmt)
            return values
        return take, lambda: pos == len(data)

    take, done = reader("cameras")
    cameras = {}
    for _ in range(take("Q")[0]):
        cam_id, model, w, h = take("iiQQ")
        cameras[cam_id] = (model, w, h, np.array(take("4d")))
    assert done()
    take, done = reader("images")
    images = {}
    for _ in range(take("Q")[0]):
        image_id, = take("i")
        q, t, (camera,) = np.array(take("4d")), np.array(take("3d")), take("i")
        name = b""
        while (ch := take("c")[0]) != b"\0":
            name += ch
        n, = take("Q")
        rows = np.array([take("ddq") for _ in range(n)]).reshape(-1, 3)
        images[image_id] = (q, t, camera, name.decode(), rows[:, :2], rows[:, 2].astype(np.int64))
    assert done()
    take, done = reader("points3D")
    points = {}
    for _ in range(take("Q")[0]):
        point_id, = take("Q")
        xyz, rgb = np.array(take("3d")), np.array(take("3B"))
        take("d")  # the reprojection error
        length, = take("Q")
        points[point_id] = (xyz, rgb, np.array([take("ii") for _ in range(length)]).reshape(-1, 2))
    assert done()
    return cameras, images, points


def _project(camera, image, points_m: np.ndarray) -> np.ndarray:
    """COLMAP's projection, -> annots.npy's pixel convention (centres at integers)."""
    _, _, _, (fx, fy, cx, cy) = camera
    q, t = image[0], image[1]
    x = points_m @ _quaternion_matrix(q).T + t
    return np.stack([fx * x[:, 0] / x[:, 2] + cx, fy * x[:, 1] / x[:, 2] + cy], 1) - 0.5


def _vertices(layout: SequenceLayout, frame: int) -> np.ndarray:
    return np.concatenate([np.load(layout.vertices(h, frame)) for h in ("right", "left")
                           if layout.vertices(h, frame).is_file()]).astype(np.float64)


def test_colmap_models_project_like_annots(processed):
    layout = processed.layout
    frames = layout.read_frames()
    result = export_stage.export(processed, ExportOptions(format="colmap", frames=(frames[2], frames[0])),
                                 progress=False)
    out = ExportLayout(result.dest)
    assert result.frames == 2 and sorted(p.name for p in out.root.iterdir()) == [
        f"{frames[0]:06d}", f"{frames[2]:06d}", "export.json"]
    annots = layout.read_annots()
    for frame in (frames[0], frames[2]):
        cameras, images, points = _read_model(out.colmap_model(frame, "cameras").parent)
        vertices = _vertices(layout, frame)
        assert len(points) == len(vertices) and len(images) == len(cameras) == len(layout.read_cams())
        for image_id, image in images.items():
            cam = image[3].split("/")[0][len("cam"):]
            assert image[3] == f"cam{cam}/image{frame:04d}.jpg"
            assert (out.colmap_frame(frame) / "images" / image[3]).is_file()
            assert (out.colmap_frame(frame) / "masks" / image[3]).with_suffix(".png").is_file()
            expected = _annots_projection(annots, cam, vertices)
            assert np.abs(_project(cameras[image[2]], image, vertices) - expected).max() < TOLERANCE_PX
            # each 2D point is its 3D point's projection, and the point's track names it back
            ids, xy = image[5], image[4] - 0.5
            assert np.abs(xy - expected[ids - 1]).max() < TOLERANCE_PX
            for k, point_id in enumerate(ids):
                assert [image_id, k] in points[point_id][2].tolist()
        for point_id, (xyz, _, _) in points.items():
            assert np.allclose(xyz, vertices[point_id - 1])
        seen = sum(len(track) > 0 for _, _, track in points.values())
        assert seen > 0.5 * len(points)


def test_pycolmap_reads_the_model_and_projects_alike(processed):
    pycolmap = pytest.importorskip("pycolmap")
    layout = processed.layout
    frame = layout.read_frames()[1]
    result = export_stage.export(processed, ExportOptions(format="colmap", frames=(frame,)), progress=False)
    model = pycolmap.Reconstruction(str(ExportLayout(result.dest).colmap_model(frame, "cameras").parent))
    annots = layout.read_annots()
    vertices = _vertices(layout, frame)
    assert len(model.images) == len(layout.read_cams()) and len(model.points3D) == len(vertices)
    for image in model.images.values():
        camera = model.cameras[image.camera_id]
        assert camera.model.name == "PINHOLE"
        pose = image.cam_from_world() if callable(image.cam_from_world) else image.cam_from_world
        projected = np.asarray(camera.img_from_cam(np.asarray([pose * p for p in vertices]))) - 0.5
        cam = image.name.split("/")[0][len("cam"):]
        assert np.abs(projected - _annots_projection(annots, cam, vertices)).max() < TOLERANCE_PX
    assert model.compute_mean_reprojection_error() < TOLERANCE_PX


def test_each_convention_mistake_is_caught(processed):
    """Wrong variants of a camera, written by hand, fail the projection test above."""
    layout = processed.layout
    frame = layout.read_frames()[0]
    result = export_stage.export(processed, ExportOptions(format="colmap", frames=(frame,)), progress=False)
    cameras, images, _ = _read_model(ExportLayout(result.dest).colmap_model(frame, "cameras").parent)
    image = next(iter(images.values()))
    camera = cameras[image[2]]
    cam = image[3].split("/")[0][len("cam"):]
    vertices = _vertices(layout, frame)
    expected = _annots_projection(layout.read_annots(), cam, vertices)
    model, w, h, (fx, fy, cx, cy) = camera
    q, t = image[0], image[1]
    conjugate = q * np.array([1, -1, -1, -1])
    wrong = {
        "pixel centres at integers": ((model, w, h, np.array([fx, fy, cx - 0.5, cy - 0.5])), image),
        "millimetres": (camera, (q, t * 1000.0, *image[2:])),
        "camera-to-world rotation": (camera, (conjugate, t, *image[2:])),
        "quaternion as x, y, z, w": (camera, (np.roll(q, -1), t, *image[2:])),
    }
    assert np.abs(_project(camera, image, vertices) - expected).max() < TOLERANCE_PX
    for name, (bad_camera, bad_image) in wrong.items():
        assert np.abs(_project(bad_camera, bad_image, vertices) - expected).max() > 0.25, name


def test_colours_come_from_the_views_that_see_the_vertex(processed):
    from PIL import Image

    layout = processed.layout
    frame = layout.read_frames()[0]
    result = export_stage.export(processed, ExportOptions(format="colmap", frames=(frame,)), progress=False)
    _, images, points = _read_model(ExportLayout(result.dest).colmap_model(frame, "cameras").parent)
    pictures = {image_id: np.asarray(Image.open(layout.root / image[3]).convert("RGB"))
                for image_id, image in images.items()}
    checked = 0
    for point_id, (_, rgb, track) in points.items():
        if len(track) == 0:
            assert rgb.tolist() == [128, 128, 128]
            continue
        samples = []
        for image_id, k in track:
            x, y = np.rint(images[image_id][4][k] - 0.5).astype(int)
            samples.append(pictures[image_id][y, x])
        assert np.abs(np.median(np.array(samples, float), axis=0) - rgb).max() <= 1.0
        checked += 1
    assert checked > 100


def test_frames_option_and_refusals(processed, helpers):
    layout = processed.layout
    with pytest.raises(InputError, match="--frames chooses the frames of --format colmap"):
        ExportOptions(format="nerfstudio", frames=(1,))
    with pytest.raises(InputError, match="is not a kept frame"):
        export_stage.export(processed, ExportOptions(format="colmap", frames=(99999,)), progress=False)
    result = export_stage.export(processed, ExportOptions(format="colmap"), progress=False)
    assert result.frames == len(layout.read_frames())
    marker = json.loads((result.dest / "export.json").read_text())
    assert marker["recipe"]["frames"] == layout.read_frames()
    again = export_stage.export(processed, ExportOptions(format="colmap"), progress=False)
    assert again.up_to_date
    fewer = export_stage.export(processed, ExportOptions(format="colmap", frames=tuple(layout.read_frames()[:1])),
                                progress=False)
    assert not fewer.up_to_date and len([p for p in result.dest.iterdir() if p.is_dir()]) == 1
    run = helpers.script("export.py", "--capture", "0", "--seq", TWO, "--basedir", str(processed.basedir),
                         "--format", "colmap", "--frames", str(layout.read_frames()[1]), "--quiet")
    assert run.returncode == 0, run.stderr
    assert "colmap export of" in run.stdout
