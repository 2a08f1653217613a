"""Test instrument for killing a run at a chosen stage (``tests/bsym_cli/test_reruns.py``).

Put this folder on ``PYTHONPATH`` and set ``BSYM_TEST_STALL`` to a stage and ``BSYM_TEST_MARKER`` to a file
path: the run does the stage's work, writes the marker, and waits there until the test SIGKILLs it, the way a
scheduler's time limit or the out-of-memory killer ends a job. Stages:

* ``indexing``: after pybids indexed a dataset, before the index is put in place;
* ``fmri``: inside the fMRI workflow's denoising node;
* ``dmri``: inside the dMRI workflow's tracking node;
* ``model``: while the attention file is half-written into OUTPUT_DIR.

Two more make the fMRI denoising node fail instead: ``fmri-crash`` (a bug: ``RuntimeError``) and
``fmri-input-error`` (a defect only the node can see: ``pipelines.errors.InputDataError``).
"""

import os
import time
from pathlib import Path

STAGE = os.environ.get("BSYM_TEST_STALL")
MARKER = os.environ.get("BSYM_TEST_MARKER")


def _stall() -> None:
    Path(MARKER).write_text(str(os.getpid()))
    time.sleep(3600)


def _install(stage: str) -> None:
    if stage == "indexing":
        from bids.layout import BIDSLayoutIndexer

        index = BIDSLayoutIndexer.__call__

        def stalled_index(self, layout):
            index(self, layout)
            _stall()

        BIDSLayoutIndexer.__call__ = stalled_index
    elif stage == "fmri":
        import pipelines.fmri.interfaces as interfaces

        interfaces.denoise = lambda *args, **kwargs: _stall()
    elif stage in ("fmri-crash", "fmri-input-error"):
        import pipelines.fmri.interfaces as interfaces
        from pipelines.errors import InputDataError

        def failing(*args, confounds_file=None, **kwargs):
            if stage == "fmri-crash":
                raise RuntimeError("planted failure")
            raise InputDataError(f"{confounds_file}: planted defect; replace the file.")

        interfaces.denoise = failing
    elif stage == "dmri":
        import pipelines.dmri.interfaces as interfaces

        interfaces.track = lambda *args, **kwargs: _stall()
    elif stage == "model":
        import bsym_cli.levels.model_stage as model_stage

        def half_written(path, *args, **kwargs):
            Path(path).write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(4096))
            _stall()

        model_stage._write_h5 = half_written
    else:
        raise ValueError(f"BSYM_TEST_STALL={stage!r}: unknown stage")


if STAGE:
    _install(STAGE)
