"""The memory estimates hold: a model batch sized for a budget keeps the process under that budget."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipelines.resources import MAIN_PROCESS_GB, largest_batch, model_batch_gb
from tests import memory

DEMO_WEIGHTS = Path(__file__).parents[2] / "brainsymphony" / "weights" / "bsym-demo-sim"
EMBED = """
import sys
import numpy as np, torch
from brainsymphony import load_bundle
from brainsymphony.inference import window_means
torch.set_num_threads(1)
model, _ = load_bundle(sys.argv[1])
batch, n = int(sys.argv[2]), 12
rng = np.random.default_rng(0)
x = rng.standard_normal((n, 450, 200), dtype=np.float32)
sc = rng.standard_normal((1, 450, 450), dtype=np.float32)
window_means(model, x, sc, np.zeros(n, int), n_subjects=1, batch_size=batch, attention=True)
"""


@pytest.mark.skipif(not memory.available(), reason="needs /proc/<pid>/smaps_rollup (Linux 4.14+) to measure PSS")
def test_a_batch_sized_for_the_budget_keeps_the_model_under_it():
    budget_gb = 1.2
    batch = largest_batch(budget_gb - MAIN_PROCESS_GB, 450, 200, at_most=8)
    assert 1 <= batch < 8 and model_batch_gb(8, 450, 200) > budget_gb  # the default batch would not fit
    result, peak = memory.run_measured([sys.executable, "-c", EMBED, str(DEMO_WEIGHTS), str(batch)])
    assert result.returncode == 0, result.stderr[-2000:]
    assert peak < budget_gb * 1000, f"batch {batch} held {peak:.0f} MB"
    unbounded, peak_8 = memory.run_measured([sys.executable, "-c", EMBED, str(DEMO_WEIGHTS), "8"])
    assert unbounded.returncode == 0 and peak_8 > budget_gb * 1000  # the estimate is not loose by miles


def test_the_largest_batch_is_at_least_one_and_at_most_asked():
    assert largest_batch(0.01, 450, 200, at_most=8) == 1
    assert largest_batch(1000.0, 450, 200, at_most=8) == 8
    small, large = largest_batch(1.0, 100, 200, at_most=64), largest_batch(1.0, 450, 200, at_most=64)
    assert small > large  # fewer regions, more windows per pass
