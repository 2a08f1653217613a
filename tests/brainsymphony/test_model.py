"""Whole-model behaviour: parameter counts, modes, batch independence, determinism, gradients."""

from __future__ import annotations

import pytest
import torch

from brainsymphony import BrainSymphony, BrainSymphonyConfig, ConfigError
from tests.brainsymphony.tiny import FRAMES, REGIONS, randomise_, tiny_config

PUBLISHED_COUNTS = {
    "spatial": 1_277_313,
    "temporal": 1_245_056,
    "context": 2_738,
    "perceiver": 451_848,
    "structural": 1_506_305,
    "gate": 32_896,
}


def test_published_parameter_counts_equal_model_md():
    model = BrainSymphony(BrainSymphonyConfig.published())
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in model.named_children()}
    assert counts == PUBLISHED_COUNTS
    assert model.structural.edge_weight_predictor[0].weight.shape == (512, 256)
    assert sum(p.numel() for p in model.structural.edge_weight_predictor.parameters()) == 197_377


def test_config_round_trips_through_json_and_refuses_unknown_fields():
    config = tiny_config(attention_type="diffusion", edge_head_widths=(9, 4))
    assert BrainSymphonyConfig.from_json(config.to_json()) == config
    with pytest.raises(ConfigError, match="n_region"):
        BrainSymphonyConfig.from_dict({**config.to_dict(), "n_region": 3})
    with pytest.raises(ConfigError, match="attention_type"):
        tiny_config(attention_type="two_hop")


def test_outputs_have_documented_shapes_and_modes(tiny_model, tiny_inputs):
    fmri, sc = tiny_inputs
    with torch.no_grad():
        out = tiny_model(fmri=fmri, sc=sc, attention=True)
        functional = randomise_(BrainSymphony(tiny_config(mode="functional")), seed=4).eval()(fmri=fmri)
        structural = randomise_(BrainSymphony(tiny_config(mode="structural")), seed=4).eval()(sc=sc)
    assert out.fused.shape == out.gates.shape == out.functional.shape == out.structural.shape == (3, REGIONS, 16)
    assert out.reconstruction.shape == (3, REGIONS, FRAMES)
    assert len(out.spatial_attention) == 2 and out.temporal_attention[1].shape == (3, 2, FRAMES, FRAMES)
    assert out.perceiver_time_attention.shape == (3, REGIONS, FRAMES)
    assert len(out.structural_attention) == 2
    torch.testing.assert_close(out.fused, out.gates * out.functional + (1 - out.gates) * out.structural)
    assert functional.structural is None and functional.fused is None and functional.functional is not None
    assert structural.functional is None and structural.reconstruction is None
    with pytest.raises(ValueError, match=r"expects \(B, 7, 11\)"):
        tiny_model(fmri=fmri.transpose(1, 2)[:, :7], sc=sc)


def test_multimodal_model_embeds_whichever_modality_is_given(tiny_model, tiny_inputs):
    fmri, sc = tiny_inputs
    with torch.no_grad():
        both = tiny_model(fmri=fmri, sc=sc)
        only_fmri = tiny_model(fmri=fmri)
        only_sc = tiny_model(sc=sc)
    torch.testing.assert_close(only_fmri.functional, both.functional)
    torch.testing.assert_close(only_sc.structural, both.structural)
    assert only_fmri.structural is None and only_fmri.fused is None and only_fmri.gates is None
    assert only_sc.functional is None and only_sc.fused is None
    with pytest.raises(ValueError, match="needs fmri"):
        tiny_model()


def test_subject_outputs_do_not_depend_on_the_rest_of_the_batch(tiny_model, tiny_inputs):
    fmri, sc = tiny_inputs
    with torch.no_grad():
        batch = tiny_model(fmri=fmri, sc=sc, attention=True)
        alone = tiny_model(fmri=fmri[1:2], sc=sc[1:2], attention=True)
        again = tiny_model(fmri=fmri, sc=sc, attention=True)
    for name in ("functional", "structural", "fused", "reconstruction", "perceiver_region_attention"):
        torch.testing.assert_close(getattr(batch, name)[1:2], getattr(alone, name), atol=1e-5, rtol=0)
        assert torch.equal(getattr(batch, name), getattr(again, name))  # deterministic


def test_gradients_reach_every_parameter_in_training_mode(tiny_inputs):
    fmri, sc = tiny_inputs
    unused = {"spatial.pos_enc.alpha", "spatial.pos_enc.ln.weight", "spatial.pos_enc.ln.bias"}
    unused |= {"structural.positional_proj.weight", "structural.positional_proj.bias"}
    for config, skip in (
        (tiny_config(mask_tokens=True), unused),
        (
            tiny_config(positional_encoding="brain_gradient", gradient_dim=3, node_encoding="laplacian"),
            {"spatial.pos_enc.pe", "structural.pos_embed", "context.mask_token"},  # no masks given
        ),
    ):
        torch.manual_seed(0)
        model = BrainSymphony(config).train()
        out = (
            model(
                fmri=fmri,
                sc=sc,
                gradients=torch.randn(REGIONS, 3),
                region_mask=torch.rand(3, REGIONS) < 0.3,
                time_mask=torch.rand(3, FRAMES) < 0.3,
                entry_mask=torch.rand(3, REGIONS, FRAMES) < 0.2,
                edge_mask=torch.rand(3, REGIONS, REGIONS) < 0.2,
            )
            if config.mask_tokens
            else model(fmri=fmri, sc=sc, gradients=torch.randn(REGIONS, 3))
        )
        features = model.context.features(model.context.masked_series(fmri, None))
        edges = model.structural.edge_logits(
            out.structural, torch.zeros(3, 2, dtype=torch.long), torch.ones(3, 2, dtype=torch.long)
        )
        loss = out.fused.square().mean() + out.reconstruction.square().mean()
        loss = loss + model.context.decode(features).square().mean() + edges.square().mean()
        loss.backward()
        without = [
            n for n, p in model.named_parameters() if n not in skip and (p.grad is None or not p.grad.abs().sum() > 0)
        ]
        assert without == []
