"""Import of the authors' release: real published files and a synthetic five-file release."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from brainsymphony import CheckpointError, import_official

OFFICIAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "official"


def _block_shapes(prefix: str, width: int = 128, mlp: int = 512) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.attn.qkv.weight": (3 * width, width),
        f"{prefix}.attn.fc_out.weight": (width, width),
        f"{prefix}.attn.fc_out.bias": (width,),
        f"{prefix}.norm1.weight": (width,),
        f"{prefix}.norm1.bias": (width,),
        f"{prefix}.norm2.weight": (width,),
        f"{prefix}.norm2.bias": (width,),
        f"{prefix}.mlp.0.weight": (mlp, width),
        f"{prefix}.mlp.0.bias": (mlp,),
        f"{prefix}.mlp.2.weight": (width, mlp),
        f"{prefix}.mlp.2.bias": (width,),
    }


def published_layout() -> dict[str, dict[str, tuple[int, ...]]]:
    """Key -> shape of the five release files, transcribed from docs/model.md, "Published checkpoint layout"."""
    spatial = {"embedding_layer.weight": (128, 200), "embedding_layer.bias": (128,), "pos_enc.pe": (1, 500, 128)}
    spatial |= {"pos_enc.alpha": (), "pos_enc.ln.weight": (128,), "pos_enc.ln.bias": (128,)}
    temporal = {"embedding_layer.weight": (128, 450), "embedding_layer.bias": (128,), "pos_enc.pe": (1, 5000, 128)}
    for n in range(6):
        spatial |= _block_shapes(f"layers.{n}")
        temporal |= _block_shapes(f"layers.{n}")
    context = {"mask_token": (1,), "conv1d.weight": (64, 1, 5), "conv1d.bias": (64,), "decoder.0.weight": (32, 64)}
    context |= {"decoder.0.bias": (32,), "decoder.2.weight": (8, 32), "decoder.2.bias": (8,)}
    context |= {"decoder.4.weight": (1, 8), "decoder.4.bias": (1,)}
    fusion = {"latents": (450, 128), "input_proj.weight": (128, 192), "input_proj.bias": (128,)}
    fusion |= {"input_ln.weight": (128,), "input_ln.bias": (128,), "cross_attn.in_proj_weight": (384, 128)}
    fusion |= {"cross_attn.in_proj_bias": (384,), "cross_attn.out_proj.weight": (128, 128)}
    fusion |= {"cross_attn.out_proj.bias": (128,), "cross_attn_norm.weight": (128,), "cross_attn_norm.bias": (128,)}
    fusion |= _block_shapes("latent_transformers.0")
    fusion |= {"head.0.weight": (256, 128), "head.0.bias": (256,), "head.2.weight": (200, 256), "head.2.bias": (200,)}
    for name, cols in (("roi_proj", 128), ("time_proj", 128), ("signal_proj", 64)):
        fusion |= {f"{name}.weight": (64, cols), f"{name}.bias": (64,)}
    structural = {"pos_embed": (450, 128), "input_proj.weight": (128, 450), "input_proj.bias": (128,)}
    structural |= {"positional_proj.weight": (128, 30), "positional_proj.bias": (128,)}
    for n in range(6):
        for lin in ("q", "k", "v", "out"):
            structural |= {f"layers.{n}.{lin}_linear.weight": (128, 128), f"layers.{n}.{lin}_linear.bias": (128,)}
        for norm in ("layer_norm1", "layer_norm2"):
            structural |= {f"layers.{n}.{norm}.weight": (128,), f"layers.{n}.{norm}.bias": (128,)}
        structural |= {f"layers.{n}.ffn.0.weight": (512, 128), f"layers.{n}.ffn.0.bias": (512,)}
        structural |= {f"layers.{n}.ffn.2.weight": (128, 512), f"layers.{n}.ffn.2.bias": (128,)}
    for i, (o, k) in enumerate(((512, 256), (128, 512), (1, 128))):
        structural |= {f"edge_weight_predictor.{2 * i}.weight": (o, k), f"edge_weight_predictor.{2 * i}.bias": (o,)}
    return {"spatial": spatial, "temporal": temporal, "context": context, "fusion": fusion, "structural": structural}


FOLDERS = {"spatial": "functional_v1", "temporal": "functional_v1", "context": "functional_v1"}
FOLDERS |= {"fusion": "functional_v1", "structural": "structural_v1"}


def write_release(root: Path, names=tuple(FOLDERS), *, edit=None, prefix="") -> dict[str, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    written = {}
    for name in names:
        state = {key: torch.randn(shape, generator=generator) for key, shape in published_layout()[name].items()}
        if edit is not None:
            edit(name, state)
        (root / FOLDERS[name]).mkdir(parents=True, exist_ok=True)
        torch.save({prefix + k: v for k, v in state.items()}, root / FOLDERS[name] / f"{name}.pth")
        written[name] = state
    return written


@pytest.mark.skipif(not OFFICIAL.is_dir(), reason="../shared/official (real published context.pth, fusion.pth) absent")
def test_real_published_files_land_where_model_md_says():
    digest = hashlib.sha256((OFFICIAL / "fusion.pth").read_bytes()).hexdigest()
    assert digest == "d72e1c734f36f46f7f0c4a25759f56766a6c4ad587abdf10f38a3c7a907a2d3c"
    with pytest.raises(CheckpointError, match="spatial.pth"):
        import_official(OFFICIAL)
    model = import_official(OFFICIAL, allow_partial=True)
    context = torch.load(OFFICIAL / "context.pth", map_location="cpu", weights_only=True)
    fusion = torch.load(OFFICIAL / "fusion.pth", map_location="cpu", weights_only=True)
    assert model.config.mode == "functional"
    for key, value in context.items():
        assert torch.equal(model.context.state_dict()[key], value), key
    for key, value in fusion.items():
        assert torch.equal(model.perceiver.state_dict()[key], value), key
    assert torch.equal(model.perceiver.cross_attn.in_proj_weight[128:256], fusion["cross_attn.in_proj_weight"][128:256])
    assert torch.equal(model.perceiver.latent_transformers[0].mlp[2].bias, fusion["latent_transformers.0.mlp.2.bias"])


def test_full_synthetic_release_imports_every_tensor(tmp_path):
    written = write_release(tmp_path, prefix="module.")
    model = import_official(tmp_path)
    assert model.config.mode == "multimodal"
    targets = {"spatial": model.spatial, "temporal": model.temporal, "context": model.context}
    targets |= {"fusion": model.perceiver, "structural": model.structural}
    for name, state in written.items():
        ours = targets[name].state_dict()
        assert set(ours) == set(state)
        for key, value in state.items():
            assert torch.equal(ours[key], value), f"{name}:{key}"
    assert not model.gate.proj.weight.any() and not model.gate.proj.bias.any()
    only_structural = tmp_path / "structural_only"
    write_release(only_structural, ("structural",))
    assert import_official(only_structural).config.mode == "structural"


def test_wrong_shape_missing_and_extra_keys_are_refused_by_name(tmp_path):
    def wrong_shape(name, state):
        if name == "context":
            state["conv1d.weight"] = torch.zeros(64, 1, 7)

    def missing(name, state):
        if name == "fusion":
            del state["time_proj.bias"]

    def extra(name, state):
        if name == "temporal":
            state["layers.6.norm1.weight"] = torch.zeros(128)

    cases = (
        (wrong_shape, r"'conv1d.weight' has shape \(64, 1, 7\).*\(64, 1, 5\)"),
        (missing, r"missing key.*time_proj.bias"),
    )
    cases += ((extra, r"unexpected key.*layers.6.norm1.weight"),)
    for index, (edit, message) in enumerate(cases):
        root = tmp_path / str(index)
        write_release(root, ("spatial", "temporal", "context", "fusion"), edit=edit)
        with pytest.raises(CheckpointError, match=message):
            import_official(root)
    with pytest.raises(CheckpointError, match="no BrainSymphony release file"):
        import_official(tmp_path)
