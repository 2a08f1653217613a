"""Test-wide settings: one thread per library (2-core machines), quiet Nipype."""

import os

import pytest

os.environ.setdefault("NIPYPE_NO_ET", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session", autouse=True)
def templateflow_home(tmp_path_factory):
    """A TEMPLATEFLOW_HOME for the whole session, laid out from wheel data as ``bsym templates --from-wheels``
    does (the tests run offline); subprocesses inherit it."""
    home = tmp_path_factory.mktemp("templateflow")
    os.environ["TEMPLATEFLOW_HOME"] = str(home)
    from bsym_cli.commands.templates import lay_out_from_wheels

    lay_out_from_wheels()
    return home
