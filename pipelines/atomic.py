"""Crash-safe file writing: every file is written to a temporary name in its folder, then renamed.

A killed run therefore never leaves a file that looks complete. Shared files at the root of the
output dataset are also written under a lock (:func:`locked`), so concurrent participants do not
corrupt them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock

LOGGER = logging.getLogger("bsym")
#: Name prefix of every temporary file; a file with it is never a finished output.
TMP_PREFIX = ".bsym-tmp-"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error remove it.

    The temporary name keeps the final suffixes (``.nii.gz``, ``.h5``) so writers that look at
    the extension behave as for the final file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` (an older folder is removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{path.name}")
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented, key-sorted JSON atomically."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def copy_file(src: str | Path, dst: str | Path) -> Path:
    """Copy ``src`` to ``dst`` atomically."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


@contextlib.contextmanager
def locked(root: str | Path, name: str = "root") -> Iterator[None]:
    """Hold an inter-process lock on ``root`` (a folder) while writing its shared files."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".bsym-{name}.lock"), timeout=600):
        yield


@contextlib.contextmanager
def waiting_lock(path: str | Path, what: str) -> Iterator[None]:
    """Hold the lock file ``path`` for the whole block; if another process holds it, say so and wait.

    The operating system releases the lock when its holder exits, killed or not, so a crashed run never
    leaves a lock that blocks the next one.
    """
    from filelock import Timeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        LOGGER.warning("Another bsym-app run is processing %s (lock %s); waiting for it to finish.", what, path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def remove_stale_temporaries(root: str | Path, *, skip: tuple[str, ...] = ()) -> list[Path]:
    """Delete temporary files left under ``root`` by a killed run; return what was removed.

    Call it only while holding the lock of what is below ``root``: a temporary file of a live writer looks
    the same. Top-level folders matching a pattern of ``skip`` (e.g. ``sub-*``) are left alone.
    """
    root = Path(root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for entry in root.iterdir():
        if entry.is_dir() and any(entry.match(pattern) for pattern in skip):
            continue
        candidates = entry.rglob(f"{TMP_PREFIX}*") if entry.is_dir() else [entry]
        for tmp in candidates:
            if tmp.name.startswith(TMP_PREFIX) and (tmp.is_file() or tmp.is_symlink()):
                tmp.unlink()
                removed.append(tmp)
    return removed


def is_temporary(path: str | Path) -> bool:
    """True for a dotfile: a file being written, one left by a killed run, or a lock; never an output."""
    return Path(path).name.startswith(".")
