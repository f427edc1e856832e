"""Reading a file never runs code: crafted MANO pickles and pickled .npy outputs, and names that
would lead a path out of its folder, are refused with one line, before anything from them runs."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from interhand_prep.core import mano_file, safe_pickle
from interhand_prep.core.errors import InputError
from interhand_prep.core.layout import SequenceLayout
from interhand_prep.core.selection import SequenceSelector
from interhand_prep.stages import get_annots as annots
from interhand_prep.stages import merge_seq as merge

REPO = Path(__file__).resolve().parents[1]
TWO = "0266_dh_pray"


def selector(root: Path, seq: str = TWO, **kw) -> SequenceSelector:
    return SequenceSelector(capture=0, seq=seq, basedir=root / "IH", mano_dir=root / "mano", **kw)


class Payload:
    """Pickles as a call of `function(*args)`: what a malicious file does."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def payloads(marker: Path) -> dict[str, tuple[Payload, str]]:
    """Each creates `marker` when called; with the global the refusal must name."""
    return {
        "builtins.eval": (Payload(eval, f"open({str(marker)!r}, 'w').write('ran')"), ".eval"),  # __builtin__ in protocol 2
        "os.system": (Payload(os.system, f"touch {marker}"), "posix.system"),
        "a numpy function": (Payload(np.savetxt, str(marker), np.zeros(1)), "numpy.savetxt"),
        "a scipy function": (Payload(scipy.io.savemat, str(marker), {}), "savemat"),
    }


PAYLOADS = ["builtins.eval", "os.system", "a numpy function", "a scipy function"]


@pytest.fixture
def data(tiny):
    """The tiny capture with the two-hand sequence through get_annots."""
    annots.run(selector(tiny, hand_type="both"), progress=False)
    return tiny


def run_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / name), *args], capture_output=True, text=True, cwd=cwd,
                          stdin=subprocess.DEVNULL)


def assert_refused(proc: subprocess.CompletedProcess, path: Path, global_name: str, marker: Path) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(path) in errors[0] and "refusing to load" in errors[0] and global_name in errors[0], errors[0]
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("kind", PAYLOADS)
def test_a_malicious_mano_file_is_refused_before_it_runs(data, kind):
    marker = data / "marker"
    payload, name = payloads(marker)[kind]
    # the payload sits inside an otherwise plausible model dict, as a value
    model = mano_file.read_model_file(data / "mano" / "MANO_LEFT.pkl")
    model["hands_coeffs"] = payload
    (data / "mano" / "MANO_LEFT.pkl").write_bytes(pickle.dumps(model, protocol=2))
    proc = run_script("get_annots.py", "--capture", "0", "--seq", TWO, "--basedir", str(data / "IH"), "--mano-dir",
                      str(data / "mano"), "--hand-type", "left", "--overwrite", "--quiet", cwd=data)
    assert_refused(proc, data / "mano" / "MANO_LEFT.pkl", name, marker)


@pytest.mark.slow
@pytest.mark.parametrize("kind", PAYLOADS)
def test_a_malicious_npy_is_refused_before_it_runs(data, kind):
    marker = data / "marker"
    payload, name = payloads(marker)[kind]
    layout = selector(data).layout
    frame = layout.read_frames()[1]
    target = layout.params("right", frame)
    buf = io.BytesIO()
    np.save(buf, {"poses": np.zeros((1, 48), np.float32), "Rh": payload}, allow_pickle=True)
    target.write_bytes(buf.getvalue())
    for script, args in (("prepare_blend_weights.py", ["--capture", "0", "--seq", TWO, "--basedir", str(data / "IH"),
                                                       "--mano-dir", str(data / "mano"), "--hand-type", "both",
                                                       "--quiet"]),
                         ("check_seq.py", [str(layout.root)])):
        assert_refused(run_script(script, *args, cwd=data), target, name, marker)
    # annots.npy too, read by every later stage, merge_seq and check_seq
    buf = io.BytesIO()
    np.save(buf, {"cams": {"K": payload}, "ims": []}, allow_pickle=True)
    layout.annots.write_bytes(buf.getvalue())
    assert_refused(run_script("check_seq.py", str(layout.root), cwd=data), layout.annots, name, marker)
    with pytest.raises(safe_pickle.UnsafePickleError):
        merge.merge_sequences(data / "IH", [TWO, TWO], "m")
    assert not marker.exists()


def test_what_the_tools_write_round_trips(data):
    """Dicts of arrays, lists, strings and numbers read back through the allow-list, and stay
    readable by a trainer's plain np.load(..., allow_pickle=True)."""
    layout = selector(data).layout
    value = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [1, 2.5, "x", None, True], "c": {"d": (1, 2)},
             "e": np.float64(3.5), "f": np.array(["s", "t"]), "g": {1, 2}}
    from interhand_prep.core.fileio import npy_bytes

    data_bytes = npy_bytes(value)
    back = safe_pickle.read_npy(data_bytes, "value.npy")
    plain = np.load(io.BytesIO(data_bytes), allow_pickle=True).item()
    for got in (back, plain):
        np.testing.assert_array_equal(got["a"], value["a"])
        assert got["b"] == value["b"] and got["c"] == value["c"] and got["e"] == 3.5 and got["g"] == {1, 2}
        np.testing.assert_array_equal(got["f"], value["f"])
    annots_dict = layout.read_annots()
    assert np.load(layout.annots, allow_pickle=True).item().keys() == annots_dict.keys()
    params = SequenceLayout.read_params(layout.params("left", layout.read_frames()[0]))
    assert params["poses"].shape == (1, 48)


@pytest.mark.parametrize("name", ["..", "../0051_dinosaur", "a/b", "/etc", ".", ""])
def test_names_that_leave_their_folder_are_refused(data, name):
    proc = run_script("get_annots.py", "--capture", "0", "--seq", name, "--basedir", str(data / "IH"), "--mano-dir",
                      str(data / "mano"), "--quiet", cwd=data)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "not a plain folder name" in proc.stderr or "sequence folder not found" in proc.stderr
    before = sorted(p.name for p in (data / "IH" / "images" / "train").rglob("*"))
    with pytest.raises(InputError, match="plain folder name|cannot read sequence entry|has not been processed"):
        merge.merge_sequences(data / "IH", [TWO, f"train/Capture0/{name}"], "merged")
    with pytest.raises(InputError, match="plain folder name"):
        merge.merge_sequences(data / "IH", [TWO, TWO], name or "..")
    assert sorted(p.name for p in (data / "IH" / "images" / "train").rglob("*")) == before


def test_crafted_ids_in_outputs_cannot_point_outside(data):
    layout = selector(data).layout
    layout.cams_txt.write_text("400002\n../../../etc\n")
    with pytest.raises(InputError, match=r"cams.txt: '../../../etc' is not a number"):
        layout.read_cams()
    with pytest.raises(InputError, match="is not a number"):
        layout.mask("../x", 1)
