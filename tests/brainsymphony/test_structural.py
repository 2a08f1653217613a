"""Signed graph transformer against the literal formulas of docs/model.md, "Signed graph transformer"."""

from __future__ import annotations

import math

import pytest
import torch

from brainsymphony import BrainSymphony
from brainsymphony.structural import attention_weightings, laplacian_encoding, signed_softmax
from tests.brainsymphony import reference
from tests.brainsymphony.tiny import REGIONS, randomise_, tiny_config

TOL = 1e-5


def test_stable_signed_softmax_equals_literal_formula():
    generator = torch.Generator().manual_seed(3)
    scores = torch.randn(2, 3, 5, 5, generator=generator, dtype=torch.float64) * 4
    scores[0, 0, 1, 2] = 0.0  # zero score: exp(0) in the denominator, nothing in the numerator
    stable = signed_softmax(scores)
    literal = reference.signed_attention_literal(scores[1, 2])
    torch.testing.assert_close(stable[1, 2], literal, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(stable[0, 0], reference.signed_attention_literal(scores[0, 0]), atol=1e-12, rtol=0)
    assert float(stable[0, 0, 1, 2]) == 0.0


def test_signed_softmax_stays_finite_where_the_formula_overflows():
    scores = torch.tensor([[200.0, -150.0, 0.0], [1000.0, 999.0, -1000.0], [0.0, 0.0, 0.0]])
    attention = signed_softmax(scores)
    assert bool(torch.isfinite(attention).all())
    assert float(attention[1, 2]) == pytest.approx(-1 / (1 + math.exp(-1) + 1), rel=1e-6)
    assert float(attention[0, 0]) == pytest.approx(1.0, rel=1e-6)
    assert float(attention[2].abs().sum()) == 0.0


@pytest.mark.parametrize("attention_type", ["first_hop", "multi_hop", "diffusion"])
def test_structural_layer_matches_reference_for_every_attention_type(tiny_inputs, attention_type):
    _, sc = tiny_inputs
    config = tiny_config(mode="structural", attention_type=attention_type)
    model = randomise_(BrainSymphony(config), seed=7).eval()
    stream = model.structural
    weightings = attention_weightings(sc, config)
    if attention_type == "multi_hop":
        square = sc[0] @ sc[0]
        expected = [sc[0], square / math.sqrt(float((square**2).sum()))]
    elif attention_type == "diffusion":
        expected = [reference.diffusion_weighting(sc[0], steps=10, theta=0.1).float()]
    else:
        expected = [sc[0]]
    assert len(weightings) == len(expected)
    for got, want in zip(weightings, expected, strict=True):
        torch.testing.assert_close(got[0], want, atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        out = stream(sc, need_weights=True)
        h = sc[0] @ stream.input_proj.weight.T + stream.input_proj.bias + stream.pos_embed
        maps = []
        for layer in stream.layers:
            h, attention = reference.signed_layer(h, expected, layer)
            maps.append(attention)
    torch.testing.assert_close(out.embeddings[0], h, atol=TOL, rtol=0)
    torch.testing.assert_close(out.attention[1][0], maps[1], atol=TOL, rtol=0)
    assert out.attention[0].shape == (3, 2, REGIONS, REGIONS)


def test_laplacian_encoding_gives_top_eigenvectors_of_normalised_laplacian(tiny_inputs):
    _, sc = tiny_inputs
    vectors = laplacian_encoding(sc, 3).double()
    rows = sc[1].double()
    cosine = torch.zeros(REGIONS, REGIONS, dtype=torch.float64)
    for i in range(REGIONS):
        for j in range(REGIONS):
            cosine[i, j] = rows[i] @ rows[j] / (rows[i].norm() * rows[j].norm())
    affinity = 1 - torch.arccos(cosine.clamp(-1, 1)) / math.pi
    degree = affinity.sum(1)
    laplacian = torch.eye(REGIONS, dtype=torch.float64) - affinity / torch.sqrt(degree[:, None] * degree[None, :])
    values = torch.linalg.eigvalsh(laplacian)
    for k in range(3):
        v = vectors[1, :, k]
        torch.testing.assert_close(laplacian @ v, values[-3 + k] * v, atol=1e-5, rtol=0)


def test_masked_edges_are_invisible_to_input_and_attention(tiny_inputs):
    _, sc = tiny_inputs
    model = randomise_(BrainSymphony(tiny_config(mode="structural")), seed=8).eval()
    mask = torch.zeros_like(sc, dtype=torch.bool)
    mask[:, 1, 4] = mask[:, 4, 1] = True
    altered = sc.clone()
    altered[:, 1, 4] = altered[:, 4, 1] = 9.0
    with torch.no_grad():
        a = model(sc=sc, edge_mask=mask, attention="structural")
        b = model(sc=altered, edge_mask=mask, attention="structural")
        zeroed = model(sc=sc.masked_fill(mask, 0.0))
    torch.testing.assert_close(a.structural, b.structural, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.structural, zeroed.structural, atol=1e-6, rtol=0)
    assert float(a.structural_attention[0][:, :, 1, 4].abs().max()) == 0.0


def test_edge_head_scores_selected_pairs(tiny_inputs):
    _, sc = tiny_inputs
    model = randomise_(BrainSymphony(tiny_config(mode="structural")), seed=9).eval()
    with torch.no_grad():
        h = model(sc=sc).structural
        source, target = torch.tensor([[0, 6], [2, 3], [5, 5]]), torch.tensor([[1, 2], [4, 0], [6, 1]])
        logits = model.structural.edge_logits(h, source, target)
        pair = torch.cat([h[1, 3], h[1, 0]])
        expected = model.structural.edge_weight_predictor(pair)
    assert logits.shape == (3, 2)
    assert float(logits[1, 1]) == pytest.approx(float(expected), abs=1e-6)
