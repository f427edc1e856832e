"""The MANO fit's error per frame: reported as injected, filtered as asked, and clear when its
inputs are missing or malformed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from interhand_prep.core.errors import InputError
from interhand_prep.core.fit_quality import REGRESSOR_NAME, fit_errors, load_joint_regressor
from interhand_prep.core.layout import FIT_QUALITY_HEADER
from interhand_prep.core.manifest import Manifest
from interhand_prep.core.options import AnnotsOptions
from interhand_prep.core.selection import SequenceSelector
from interhand_prep.stages import get_annots
from interhand_prep.synthetic.capture import CaptureSpec, SequenceSpec, generate_capture

REPO = Path(__file__).resolve().parents[1]
SEQ = "0266_dh_pray"
FAR = {1: 40.0, 4: 25.0}        # frame offsets whose joints are far off the fit (mm)
INVALID = {2: [0, 1, 2, 3, 21, 22], 6: list(range(21, 42))}  # some joints; the whole left hand


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    spec = CaptureSpec(capture=0, seed=12, camera_ids=["400002", "400016", "410214"], image_scale=0.25,
                       default_cases=False, sequences=[SequenceSpec(SEQ, "both", 8)],
                       far_off={SEQ: FAR}, invalid_joints={SEQ: INVALID})
    manifest = generate_capture(root / "IH", root / "mano", spec)
    return root, manifest


@pytest.fixture
def data(generated, tmp_path):
    import shutil

    root, manifest = generated
    shutil.copytree(root / "IH", tmp_path / "IH")
    shutil.copytree(root / "mano", tmp_path / "mano")
    return tmp_path, manifest


def selector(root: Path) -> SequenceSelector:
    return SequenceSelector(capture=0, seq=SEQ, basedir=root / "IH", mano_dir=root / "mano", hand_type="both")


def test_the_reported_errors_are_the_injected_ones(data):
    root, manifest = data
    sel = selector(root)
    result = get_annots.run(sel, progress=False)
    assert sel.layout.fit_quality.read_text().splitlines()[0] == FIT_QUALITY_HEADER
    rows = {(f, h): (m, x, n) for f, h, m, x, n in sel.layout.read_fit_quality()}
    assert sorted(rows) == sorted((f, h) for f in result.frames for h in ("right", "left"))
    injected = manifest.joint_errors[SEQ]
    for (frame, hand), (mean, worst, count) in rows.items():
        errors = injected[frame][hand]
        assert count == np.isfinite(errors).sum()
        if count:
            assert abs(mean - np.nanmean(errors)) <= 5e-4 and abs(worst - np.nanmax(errors)) <= 5e-4
        else:
            assert np.isnan(mean) and np.isnan(worst)  # empty cells: no valid joint
    frames = manifest.frames[SEQ]
    assert rows[(frames[6], "left")][2] == 0 and ",left,,,0" in sel.layout.fit_quality.read_text()
    assert rows[(frames[2], "right")][2] == 17 and rows[(frames[2], "left")][2] == 19
    assert "fit:     right: mean joint error median" in result.summary()


def test_the_filter_drops_exactly_the_far_off_frames(data):
    root, manifest = data
    sel = selector(root)
    plain = get_annots.run(sel, progress=False)
    result = get_annots.run(sel, AnnotsOptions(max_joint_error=20.0), progress=False)
    assert "changed: options.max_joint_error: null -> 20.0" in result.reason
    far = {manifest.frames[SEQ][offset] for offset in FAR}
    assert set(plain.frames) - set(result.frames) == far
    for frame in far:
        assert result.dropped_frames[frame] == "MANO fit off the annotated joints by more than 20 mm (mean)"
    # the rows of the dropped frames stay in the file
    assert {f for f, *_ in sel.layout.read_fit_quality()} == set(plain.frames)
    assert Manifest.read(sel.layout.root).recipe("get_annots")["options"]["max_joint_error"] == 20.0
    with pytest.raises(InputError, match="no frame left .* MANO fit off the annotated joints by more than 0.001 mm"):
        get_annots.run(sel, AnnotsOptions(max_joint_error=0.001), progress=False)


def test_missing_inputs_warn_or_stop(data, caplog):
    root, _ = data
    sel = selector(root)
    (root / "mano" / REGRESSOR_NAME).rename(root / "regressor.npy")
    with caplog.at_level("WARNING"):
        get_annots.run(sel, progress=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and REGRESSOR_NAME in warnings[0] and "no fit_quality.csv" in warnings[0]
    assert not sel.layout.fit_quality.exists()
    with pytest.raises(InputError, match=f"{REGRESSOR_NAME}: not found; --max-joint-error needs"):
        get_annots.run(sel, AnnotsOptions(max_joint_error=10.0), progress=False)
    # --joint-regressor points at it; the file then appears
    get_annots.run(sel, AnnotsOptions(joint_regressor=root / "regressor.npy"), progress=False)
    assert sel.layout.fit_quality.is_file()
    # no joint annotations: a warning, and the csv of the earlier run is removed
    (root / "IH/annotations/train/InterHand2.6M_train_joint_3d.json").unlink()
    get_annots.run(sel, AnnotsOptions(joint_regressor=root / "regressor.npy"), progress=False)
    assert not sel.layout.fit_quality.exists()


def test_malformed_inputs_are_one_line_errors(data, fixtures_dir):
    root, manifest = data
    sel = selector(root)
    np.save(root / "mano" / REGRESSOR_NAME, np.zeros((16, 778), np.float32))
    proc = subprocess.run([sys.executable, str(REPO / "get_annots.py"), "--capture", "0", "--seq", SEQ, "--basedir",
                           str(root / "IH"), "--mano-dir", str(root / "mano"), "--hand-type", "both", "--quiet"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith(
        "joint regressor has shape (16, 778) (float32), expected (21, 778) floats for this MANO model")
    # the real regressor has the official model's shape: it fits 778 vertices, not the fixture's 86
    real = fixtures_dir / "interhand2.6m_meta" / REGRESSOR_NAME
    assert load_joint_regressor(real, 778).shape == (21, 778)
    with pytest.raises(InputError, match=r"expected \(21, 86\)"):
        load_joint_regressor(real, 86)
    np.save(root / "mano" / REGRESSOR_NAME, np.load(real))  # it fits the synthetic 778-vertex model's shape
    path = root / "IH/annotations/train/InterHand2.6M_train_joint_3d.json"
    joints = json.loads(path.read_text())
    frame = str(manifest.frames[SEQ][0])
    joints["0"][frame]["joint_valid"] = [1] * 42  # as (42,): accepted
    joints["0"][frame]["world_coord"] = joints["0"][frame]["world_coord"][:40]
    path.write_text(json.dumps(joints))
    with pytest.raises(InputError, match=rf"joint_3d.json: frame {frame}: world_coord has shape \(40, 3\)"):
        get_annots.run(sel, progress=False)


def test_errors_over_valid_joints_only():
    fitted = np.zeros((2, 21, 3))
    annotated = np.zeros((2, 21, 3))
    annotated[0, :, 0] = np.arange(21)  # joint j off by j mm
    valid = np.ones((2, 21), bool)
    valid[0, 20] = False
    valid[1] = False
    errors = fit_errors(fitted, annotated, valid)
    assert errors.mean[0] == pytest.approx(np.arange(20).mean()) and errors.max[0] == 19
    assert errors.valid_joints.tolist() == [20, 0] and np.isnan(errors.mean[1]) and np.isnan(errors.max[1])
