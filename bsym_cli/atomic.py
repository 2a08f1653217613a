"""Crash-safe file writing: every file is written to a temporary name in its folder, then renamed.

A killed run therefore never leaves a file that looks complete. Shared files at the root of the
output dataset are also written under a lock (:func:`locked`), so concurrent participants do not
corrupt them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock

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


def remove_stale_temporaries(root: str | Path) -> list[Path]:
    """Delete temporary files left by a killed run under ``root``; return what was removed."""
    removed = []
    for tmp in Path(root).rglob(f"{TMP_PREFIX}*"):
        if tmp.is_file():
            tmp.unlink()
            removed.append(tmp)
    return removed
