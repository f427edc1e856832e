"""The command line as users meet it: every command's --help, the installed wheel, and the
top-level scripts as thin wrappers of the same commands."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from interhand_prep import cli

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "smplx", "scipy", "pyrender", "OpenGL", "PIL", "point_cloud_utils", "tqdm")


@pytest.mark.parametrize("command", [c.name for c in cli.COMMANDS])
def test_every_command_has_help_on_every_option(command, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.run_command(command, ["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert cli.BY_NAME[command].summary.split(" (")[0].rstrip(".") in " ".join(text.split())
    parser = cli.BY_NAME[command].parser(f"interhand-prep {command}", cli.BY_NAME[command].summary)
    for action in parser._actions:
        assert action.help, f"{command}: {action.option_strings or action.dest} has no help"
    assert callable(cli._runner(cli.BY_NAME[command]))  # the function it runs exists


def test_help_imports_nothing_heavy():
    code = ("import sys\nfrom interhand_prep import cli\n"
            "for name in [c.name for c in cli.COMMANDS]:\n"
            "    try:\n        cli.run_command(name, ['--help'])\n    except SystemExit:\n        pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_the_command_lists_its_subcommands(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in cli.COMMANDS:
        assert f"  {command.name} " in text
    assert cli.main(["get-annot"]) == 2
    assert "did you mean get-annots" in capsys.readouterr().err


@pytest.mark.slow
def test_the_wheel_installs_and_runs_outside_the_checkout(tmp_path, tiny):
    """pip-installed into a fresh venv (the dependencies borrowed from this one), the console
    command runs from any folder, without activating the venv, and takes nothing from the checkout."""
    dist, venv = tmp_path / "dist", tmp_path / "venv"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(dist), str(REPO)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    wheel, = dist.glob("interhand_prep-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                              "--no-deps", "-q", str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import interhand_prep.core.dataset as d; "
                            "print(d.__file__); print(d.PACKAGED_CAMERA_TABLE.is_file())"],
                           capture_output=True, text=True, cwd=elsewhere, env=env)
    assert where.stdout.split() == [str(site / "interhand_prep" / "core" / "dataset.py"), "True"], where.stderr
    run = subprocess.run([str(venv / "bin" / "interhand-prep"), "get-annots", "--capture", "0", "--seq", "0266_dh_pray",
                          "--basedir", str(tiny / "IH"), "--mano-dir", str(tiny / "mano"), "--hand-type", "both",
                          "--out-root", "out", "--quiet"], capture_output=True, text=True, cwd=elsewhere, env=env)
    assert run.returncode == 0, run.stderr
    assert (elsewhere / "out" / "train" / "Capture0" / "0266_dh_pray" / "annots.npy").is_file()


def test_workers_follow_the_cpus_the_process_may_use(monkeypatch):
    """Affinity (taskset, a Slurm task's binding) and SLURM_CPUS_PER_TASK bound the worker counts."""
    import os
    import subprocess
    import sys

    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from interhand_prep.core.locking import usable_cpus; print(usable_cpus())")
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CPUS_PER_TASK"}
    one_cpu = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert one_cpu.stdout.strip() == "1", one_cpu.stderr
    from interhand_prep.core.locking import usable_cpus

    mine = len(os.sched_getaffinity(0))
    for value, expected in (("1", 1), (str(mine + 7), mine), ("", mine), ("junk", mine)):
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", value)
        assert usable_cpus() == expected, value


def test_demo_data_only_makes_a_capture_of_the_asked_size_and_never_touches_one(tmp_path):
    import subprocess
    import sys

    from interhand_prep.core.constants import DEMO_SEQUENCES
    from interhand_prep.core.dataset import InterHandDataset

    basedir, mano = tmp_path / "IH", tmp_path / "mano"
    cmd = [sys.executable, "-m", "interhand_prep", "demo", "--data-only", "--basedir", str(basedir), "--mano-dir",
           str(mano), "--quiet"]
    made = subprocess.run(cmd + ["--sequences", "3", "--cameras", "4", "--frames", "2"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    ds = InterHandDataset(basedir, "train")
    assert ds.sequences(0) == sorted(name for name, _ in DEMO_SEQUENCES[:3])
    images = ds.sequence_images(0, DEMO_SEQUENCES[1][0])
    assert len(images.cameras) == 4 and len(images.frames()) == 2
    assert "interhand-prep process --capture 0 --all" in made.stdout and not (tmp_path / "logs").exists()
    stamp = {p: p.stat().st_mtime_ns for p in basedir.rglob("*.jpg")}
    refused = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert refused.returncode == 2 and "never touches an existing capture" in refused.stderr
    assert {p: p.stat().st_mtime_ns for p in basedir.rglob("*.jpg")} == stamp
    replaced = subprocess.run(cmd + ["--overwrite", "--sequences", "1", "--frames", "1", "--cameras", "2"],
                              capture_output=True, text=True, cwd=tmp_path)
    assert replaced.returncode == 0, replaced.stderr
    assert InterHandDataset(basedir, "train").sequences(0) == [DEMO_SEQUENCES[0][0]]
