"""The authors' reference implementation, loaded from a user's checkout for ``bsym bench model --authors-code``.

Their repository (https://github.com/Moein-Khajehnejad/BrainSymphony) is not a dependency of bsym-app: a user
clones it and passes the folder. Its ``models/__init__.py`` imports a name that its ``layers`` package does not
export, so the package is entered without running that file: only ``models/brainsymphony.py`` and the modules it
imports are loaded, under a package name of our own. Nothing of their code is changed or copied.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    import torch

    from brainsymphony import BrainSymphonyConfig

#: The file that marks a checkout of the authors' repository.
AUTHORS_MODEL_FILE = Path("models") / "brainsymphony.py"
#: The name their ``models`` package is loaded under (relative imports inside it resolve against it).
AUTHORS_PACKAGE = "bsym_authors_models"


def authors_config(config: BrainSymphonyConfig) -> dict:
    """The authors' configuration dictionary (the keys of their ``load_pretrained_model.py``) for ``config``."""
    return {
        "mode": config.mode,
        "rois": config.n_regions,
        "time_steps": config.n_timepoints,
        "dim": config.width,
        "num_layers": config.spatial_depth,
        "num_heads": config.spatial_heads,
        "mlp_dim": config.mlp_width,
        "max_len_spatial": config.max_regions,
        "max_len_temp": config.max_timepoints,
        "pos_enc_type": config.positional_encoding,
        "dropout": config.dropout,
        "num_layers_struct": config.structural_depth,
        "num_heads_struct": config.structural_heads,
        "attention_type": config.attention_type,
        "max_hops": config.max_hops,
        "diffusion_theta": config.diffusion_theta,
        "pos_enc_type_struct": config.node_encoding,
    }


def authors_batch(fmri: torch.Tensor, sc: torch.Tensor) -> dict:
    """Their model's input: the BOLD series (B, R, T), the connectome (B, R, R) as adjacency and as the nodes'
    connectivity profiles (their structural input width is R)."""
    return {"fmri": fmri, "sc_adj": sc, "sc_feats": sc}


def authors_checkout(folder: Path) -> Path:
    """``folder`` resolved, checked to be a checkout of the authors' repository.

    Raises
    ------
    click.BadParameter
        If it is not (a usage error of ``--authors-code``, exit code 2, as for a folder that does not exist):
        the message names the folder and how to get one.
    """
    folder = folder.resolve()
    if not (folder / AUTHORS_MODEL_FILE).is_file():
        raise click.BadParameter(
            f"{folder} is not a checkout of the authors' repository: {AUTHORS_MODEL_FILE} is missing. Clone "
            "https://github.com/Moein-Khajehnejad/BrainSymphony and pass its folder.",
            param_hint="--authors-code",
        )
    return folder


def load_authors_model(checkout: Path, config: BrainSymphonyConfig) -> torch.nn.Module:
    """Their ``BrainSymphony`` built from ``checkout`` (see :func:`authors_checkout`) with ``config``, randomly
    initialised, in eval mode."""
    checkout = authors_checkout(checkout)
    for name in [name for name in sys.modules if name.split(".")[0] == AUTHORS_PACKAGE]:
        del sys.modules[name]  # a checkout loaded before in this process
    package = types.ModuleType(AUTHORS_PACKAGE)
    package.__path__ = [str(checkout / "models")]
    sys.modules[AUTHORS_PACKAGE] = package
    module = importlib.import_module(f"{AUTHORS_PACKAGE}.brainsymphony")
    return module.BrainSymphony(authors_config(config)).eval()
