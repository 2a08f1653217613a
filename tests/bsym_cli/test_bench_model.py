"""``bsym bench model --authors-code``: the authors' implementation timed beside ours, in the same run.

Their repository is not available offline, so a stand-in checkout mimics what the loader must cope with: a
``models/__init__.py`` that fails on import, relative imports inside the package, a dict configuration and a
dict batch. The stand-in sleeps in its forward pass, so its measured throughput is known from above.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import click
import pytest

from brainsymphony import BrainSymphonyConfig
from bsym_cli.commands.bench.authors import authors_checkout, load_authors_model

#: Seconds the stand-in's forward pass sleeps: it cannot exceed 1 / SLEEP subjects/s at batch 1.
SLEEP = 0.4


def _stand_in_checkout(root):
    """A folder laid out like the authors' repository, with a model that records what it was given."""
    models = root / "models"
    (models / "layers").mkdir(parents=True)
    # as in their release: the package's __init__ imports a name its layers package does not export
    (models / "__init__.py").write_text("from .layers import SignedGraphTransformer\n")
    (models / "layers" / "__init__.py").write_text("")
    (models / "layers" / "pause.py").write_text(f"import time\n\ndef pause():\n    time.sleep({SLEEP})\n")
    (models / "brainsymphony.py").write_text(
        textwrap.dedent(
            """
            import json
            from pathlib import Path

            import torch

            from .layers.pause import pause

            SEEN = Path(__file__).with_name("seen.json")


            class BrainSymphony(torch.nn.Module):
                def __init__(self, config):
                    super().__init__()
                    self.config = config
                    self.gate = torch.nn.Linear(2, 1)

                def forward(self, batch):
                    shapes = {name: list(value.shape) for name, value in batch.items()}
                    seen = {"config": self.config, "shapes": shapes, "grad": torch.is_grad_enabled()}
                    SEEN.write_text(json.dumps(seen))
                    pause()
                    return {"fused_embeds": batch["fmri"].mean(-1)}
            """
        )
    )
    return root


def test_the_authors_model_loads_past_their_broken_package_init_with_the_published_configuration(tmp_path):
    checkout = _stand_in_checkout(tmp_path / "BrainSymphony")
    model = load_authors_model(checkout, BrainSymphonyConfig.published())
    assert not model.training
    # the values of their load_pretrained_model.py, from our published configuration
    expected = {
        "mode": "multimodal",
        "rois": 450,
        "time_steps": 200,
        "dim": 128,
        "num_layers": 6,
        "num_heads": 4,
        "mlp_dim": 512,
        "max_len_spatial": 500,
        "max_len_temp": 5000,
        "pos_enc_type": "learnable",
        "num_layers_struct": 6,
        "num_heads_struct": 4,
        "attention_type": "first_hop",
        "pos_enc_type_struct": "learnable",
    }
    assert expected.items() <= model.config.items()
    # a second checkout in the same process is loaded from its own files, not from the first one's modules
    other = _stand_in_checkout(tmp_path / "other")
    (other / "models" / "brainsymphony.py").write_text(
        "import torch\n\nclass BrainSymphony(torch.nn.Module):\n    other = True\n\n"
        "    def __init__(self, config):\n        super().__init__()\n"
    )
    assert load_authors_model(other, BrainSymphonyConfig.published()).other


def test_a_folder_that_is_no_checkout_of_the_authors_code_is_named_with_the_fix(tmp_path):
    (tmp_path / "models").mkdir()
    with pytest.raises(click.BadParameter) as raised:
        authors_checkout(tmp_path)
    message = raised.value.message
    assert str(tmp_path) in message and "models/brainsymphony.py is missing" in message
    assert "github.com/Moein-Khajehnejad/BrainSymphony" in message


def test_the_model_bench_times_the_authors_code_from_a_relative_path_beside_ours(tmp_path):
    _stand_in_checkout(tmp_path / "BrainSymphony")
    args = ["--batches", "1", "--bf16-batch", "1", "--repeats", "2", "--threads", "1"]
    args += ["--authors-code", "BrainSymphony", "--authors-batches", "1", "--json", "bench.json"]
    code = "import sys; from bsym_cli.commands.bench.model import model; model(sys.argv[1:])"
    command = [sys.executable, "-c", code, *args]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    (theirs,) = report["authors_runs"]
    ours = report["runs"][0]  # fp32, batch 1, the stream the app runs
    # their forward pass ran (inputs as the real model takes them, without autograd) and was what was timed
    seen = json.loads((tmp_path / "BrainSymphony" / "models" / "seen.json").read_text())
    assert seen["shapes"] == {"fmri": [1, 450, 200], "sc_adj": [1, 450, 450], "sc_feats": [1, 450, 450]}
    assert seen["config"]["rois"] == 450 and seen["grad"] is False
    assert 0.5 / SLEEP < theirs["subjects_per_s"] < 1 / SLEEP
    assert theirs["bsym_speedup"] == pytest.approx(ours["subjects_per_s"] / theirs["subjects_per_s"])
    assert f"bsym-app is {theirs['bsym_speedup']:.1f}x faster" in done.stdout
