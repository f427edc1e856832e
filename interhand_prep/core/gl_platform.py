"""Which OpenGL platform renders here (EGL or OSMesa), decided once per machine and library version.

`--backend auto` takes NVIDIA's EGL where the machine has an NVIDIA GPU, and OSMesa otherwise: on
CPU-only machines OSMesa renders straight into memory and is faster than Mesa's EGL, whose
offscreen path goes through a framebuffer object. A platform is used without a test when this
machine has already shown that it works; otherwise it is probed once, in a subprocess (a process
fixes PyOpenGL's platform at its first import, so a failed try would poison this one), and the
verdict is cached in $XDG_CACHE_HOME/interhand_prep/gl-platforms.json, keyed by host, the pyrender
and PyOpenGL versions, whether an NVIDIA device exists, and the EGL and OSMesa libraries' paths and
modification times. The decision and its reason are logged.
"""

from __future__ import annotations

import ctypes.util
import functools
import hashlib
import json
import os
import platform as platform_module
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .options import BACKENDS

_PROBE = """
import os, sys
os.environ["PYOPENGL_PLATFORM"] = sys.argv[1]
import pyrender
r = pyrender.OffscreenRenderer(8, 8)
r.delete()
"""
probes = 0  # subprocess probes run by this process (tests check that the cache spares them)


@dataclass(frozen=True)
class PlatformChoice:
    platform: str   # "egl" or "osmesa"
    reason: str     # why this one, for the log


def nvidia_gpu_present() -> bool:
    """An NVIDIA driver's device files (what NVIDIA's EGL needs)."""
    return Path("/dev/nvidiactl").exists() and any(Path("/dev").glob("nvidia[0-9]*"))


def _library_identity(name: str) -> str:
    found = ctypes.util.find_library(name)
    if not found:
        return f"{name}: none"
    for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib"):
        path = Path(folder) / found
        if path.exists():
            return f"{path} {path.stat().st_mtime_ns}"
    return found


def machine_key() -> str:
    """What a cached verdict holds for: this host, these library versions and files."""
    from importlib.metadata import PackageNotFoundError, version

    def package(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "none"

    parts = [socket.gethostname(), platform_module.machine(), package("pyrender2") + "/" + package("pyrender"),
             package("PyOpenGL"), str(nvidia_gpu_present()), _library_identity("EGL"), _library_identity("OSMesa")]
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]


def _cache_file() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "interhand_prep" / "gl-platforms.json"


def _read_cache() -> dict:
    try:
        data = json.loads(_cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _store_verdict(key: str, platform: str, verdict: str | None) -> None:
    from .fileio import write_text

    data = _read_cache()
    data.setdefault(key, {})[platform] = verdict
    try:
        write_text(_cache_file(), json.dumps(data, indent=1))
    except OSError:
        pass  # an unwritable cache only costs a probe next time


@functools.lru_cache(maxsize=None)
def probe_platform(platform: str) -> str | None:
    """Try to create an offscreen context on `platform` in a subprocess; None if it works, else why
    (once per process)."""
    global probes
    probes += 1
    env = dict(os.environ, PYOPENGL_PLATFORM=platform)
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE, platform], env=env, capture_output=True, text=True,
                              timeout=60)
    except subprocess.TimeoutExpired:
        return "timed out creating a context"
    if proc.returncode == 0:
        return None
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {proc.returncode}"


def verdict(platform: str) -> tuple[str | None, bool]:
    """(None if `platform` works here else why, whether the answer came from the cache)."""
    key = machine_key()
    cached = _read_cache().get(key, {})
    if platform in cached:
        return cached[platform], True
    result = probe_platform(platform)
    _store_verdict(key, platform, result)
    return result, False


def select_platform(backend: str) -> PlatformChoice:
    """Resolve --backend ('auto', 'egl', 'osmesa') to a working platform and set PYOPENGL_PLATFORM
    (worker processes started afterwards inherit it)."""
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "auto":
        if nvidia_gpu_present():
            order = [("egl", "auto: an NVIDIA GPU is present, its EGL renders on it"),
                     ("osmesa", "auto: NVIDIA's EGL failed, OSMesa renders on the CPU")]
        else:
            order = [("osmesa", "auto: no NVIDIA GPU; OSMesa is the faster renderer on CPUs"),
                     ("egl", "auto: OSMesa failed, Mesa's EGL renders on the CPU")]
    else:
        order = [(backend, "as asked")]
    reasons = {}
    for platform, why in order:
        failure, cached = verdict(platform)
        if failure is None:
            os.environ["PYOPENGL_PLATFORM"] = platform
            if platform == "osmesa":
                # llvmpipe's rasteriser threads cost more than they save on the small cropped views
                # (1.3 against 2.0 ms a view, measured), and the workers already fill the cores
                os.environ.setdefault("LP_NUM_THREADS", "0")
            return PlatformChoice(platform, why + ("" if not cached else " (verdict cached for this machine)"))
        reasons[platform] = failure
    detail = "; ".join(f"{p}: {r}" for p, r in reasons.items())
    raise InputError(f"no OpenGL platform for offscreen rendering ({detail}); install the system libraries "
                     "(Debian: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6) or pick --backend")
