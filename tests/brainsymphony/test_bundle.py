"""Weight bundles: bit-exact round trip (folder and .tar), metadata, refusal of tampered weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from brainsymphony import CheckpointError, load_bundle, save_bundle
from brainsymphony.bundle import read_bundle_metadata
from tests.brainsymphony.tiny import REGIONS


@pytest.mark.parametrize("suffix", ["", ".tar"])
def test_round_trip_is_bit_exact_with_metadata(tiny_model, tiny_inputs, tmp_path, suffix):
    median = np.linspace(-1.0, 1.0, REGIONS)
    iqr = np.arange(1, REGIONS + 1) / 3.0
    target = tmp_path / f"tiny{suffix}"
    written = save_bundle(
        tiny_model,
        target,
        name="tiny",
        atlas="Toy7",
        labels_sha256="ab" * 32,
        tr=0.72,
        scaling_median=median,
        scaling_iqr=iqr,
        licence="Apache-2.0",
        source="test",
        training="none",
        notes=["gate random"],
    )
    model, metadata = load_bundle(target)
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert metadata.config == tiny_model.config and metadata.sha256 == written.sha256
    assert (metadata.atlas, metadata.n_regions, metadata.n_timepoints, metadata.tr) == ("Toy7", 7, 11, 0.72)
    assert np.array_equal(metadata.scaling_median, median) and np.array_equal(metadata.scaling_iqr, iqr)
    assert metadata.notes == ("gate random",) and metadata.sc_transform == "log10_count_per_volume"
    fmri, sc = tiny_inputs
    with torch.no_grad():
        assert torch.equal(model(fmri=fmri, sc=sc).fused, tiny_model(fmri=fmri, sc=sc).fused)


def test_tampered_weights_are_refused(tiny_model, tmp_path):
    save_bundle(tiny_model, tmp_path / "b", name="tiny", atlas="Toy7")
    weights = tmp_path / "b" / "model.safetensors"
    payload = bytearray(weights.read_bytes())
    payload[-3] ^= 0x01
    weights.write_bytes(bytes(payload))
    with pytest.raises(CheckpointError, match="sha256 .* were modified"):
        load_bundle(tmp_path / "b")
    with pytest.raises(CheckpointError, match="sha256"):
        read_bundle_metadata(tmp_path / "b")


def test_manifest_problems_name_the_field(tiny_model, tmp_path):
    save_bundle(tiny_model, tmp_path / "b", name="tiny", atlas="Toy7")
    manifest = tmp_path / "b" / "bundle.json"
    data = json.loads(manifest.read_text())
    data["config"]["n_regionz"] = 7
    manifest.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="n_regionz"):
        load_bundle(tmp_path / "b")
    with pytest.raises(CheckpointError, match="not a weight bundle, bundle.json is missing"):
        load_bundle(tmp_path)
    with pytest.raises(CheckpointError, match=r"shapes \(3,\) and \(3,\); expected \(7,\)"):
        save_bundle(tiny_model, tmp_path / "c", name="t", atlas="a", scaling_median=np.zeros(3), scaling_iqr=np.ones(3))
