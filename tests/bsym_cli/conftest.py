"""Shared fixtures of the command-line tests: small demo participants run through bsym-app once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from brainsymphony import BrainSymphony, save_bundle
from bsym_cli.bids.atlases import resolve_atlas
from bsym_cli.cli.app import main
from bsym_cli.commands.demo.study import DemoSettings, build_demo
from tests.brainsymphony.tiny import randomise_, tiny_config

MANIFEST = Path(__file__).parent.parent / "data" / "participant_outputs.txt"
FRAMES = 16  # T of the tiny bundle: 60 s at TR 1.0 -> 83 frames at 0.72 s -> 5 windows


def run_app(*args) -> int:
    """Run ``bsym-app`` in this process and return its exit code.

    A run sets process-wide variables (library caches under its work directory, thread counts); they are
    put back afterwards, so that they leak neither into the next test nor into the processes it starts.
    """
    environ = dict(os.environ)
    try:
        with pytest.raises(SystemExit) as info:
            main([str(a) for a in args])
    finally:
        os.environ.clear()
        os.environ.update(environ)
    return int(info.value.code or 0)


def _bundle(path: Path, atlas, *, regions: int = 450, frames: int = FRAMES, seed: int = 0) -> Path:
    config = tiny_config(n_regions=regions, n_timepoints=frames, max_regions=regions, max_timepoints=64)
    model = randomise_(BrainSymphony(config), seed=seed, scale=0.1)
    save_bundle(
        model,
        path,
        name="tiny-random",
        atlas=atlas.label,
        labels_sha256=atlas.labels_sha256,
        tr=0.72,
        licence="none",
        source="tests",
        training="random weights for tests",
    )
    return path


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("demo")
    build_demo(root, DemoSettings(participants=6, seed=5, n_frames=60, n_dummy=2, n_directions=12, n_b0=2))
    atlas = resolve_atlas("Schaefer400Tian450", atlas_dataset=root / "atlases")
    bundle = _bundle(root / "tiny_bundle", atlas)
    out, work = root / "out", root / "work"
    args = [
        root / "bids",
        out,
        "participant",
        "--skip",
        "dmri",
        "--atlas-dataset",
        root / "atlases",
        "--nprocs",
        "1",
        "--weights",
        bundle,
        "-w",
        work,
    ]
    assert run_app(*args) == 0
    return {"root": root, "out": out, "work": work, "bundle": bundle, "args": args, "atlas": atlas}
