"""BrainSymphony: a multimodal foundation model of fMRI time series and structural connectomes.

PyTorch, with one optional compiled kernel (the Perceiver's key stream, ``brainsymphony/fused_stream.py``);
knows nothing of BIDS. ``from brainsymphony import BrainSymphony, BrainSymphonyConfig``.
"""

from brainsymphony.bundle import BundleMetadata, load_bundle, save_bundle
from brainsymphony.config import BrainSymphonyConfig
from brainsymphony.errors import CheckpointError, ConfigError
from brainsymphony.model import BrainSymphony, BrainSymphonyOutput
from brainsymphony.official import import_official

__all__ = [
    "BrainSymphony",
    "BrainSymphonyConfig",
    "BrainSymphonyOutput",
    "BundleMetadata",
    "CheckpointError",
    "ConfigError",
    "import_official",
    "load_bundle",
    "save_bundle",
]
