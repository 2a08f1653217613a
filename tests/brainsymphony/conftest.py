"""Fixtures of the model tests: a randomised tiny model and odd-sized inputs."""

from __future__ import annotations

import pytest
import torch

from brainsymphony import BrainSymphony
from tests.brainsymphony.tiny import FRAMES, REGIONS, randomise_, tiny_config


@pytest.fixture
def tiny_model() -> BrainSymphony:
    torch.manual_seed(0)
    return randomise_(BrainSymphony(tiny_config()), seed=1).eval()


@pytest.fixture
def tiny_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    fmri = torch.randn(3, REGIONS, FRAMES, generator=generator)
    sc = torch.randn(3, REGIONS, REGIONS, generator=generator)
    sc = (sc + sc.transpose(1, 2)) / 2
    sc = sc * (1 - torch.eye(REGIONS))
    return fmri, sc
