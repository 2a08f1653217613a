"""Measure what the demo bundle's subject features are invariant to (docs/demo.md, "What the embeddings see").

Embeds each participant's cached model inputs (``DEMO/work/sub-*/model/sub-*_model_input.npz``, written by
the participant level) with the connectome and the series changed in controlled ways, and compares the change
of the fused subject feature vector with the spread of that vector across participants. One change moves a
participant into the other demo group: its own group's tract edges (``DEMO/truth/dwi_tracts.json``) move onto
the other group's tract pairs, keeping their values.

    python scripts/embedding_invariance.py demo
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from brainsymphony import load_bundle
from pipelines.model.embed import embed_participant
from pipelines.model.inputs import ModelInputs, load_model_inputs

BUNDLE = Path(__file__).resolve().parent.parent / "brainsymphony" / "weights" / "bsym-demo-sim"


def _features(model, windows, sc) -> np.ndarray:
    found = embed_participant(model, windows, sc, attention=False, reconstruction_folds=0)
    return found.subject_vector()["fused"]


def main(demo: Path) -> None:
    model, _ = load_bundle(BUNDLE)
    model.eval()
    paths = sorted((demo / "work").glob("sub-*/model/sub-*_model_input.npz"))
    inputs = [load_model_inputs(p) for p in paths]
    groups = [json.loads((demo / "truth" / f"{p.parent.parent.name}_params.json").read_text())["group"] for p in paths]
    tracts = json.loads((demo / "truth" / "dwi_tracts.json").read_text())["tracts"]
    only = {group: [t["indices"] for t in tracts if t["groups"] == [group]] for group in ("reference", "rewired")}
    base = np.stack([_features(model, i.windows, i.sc) for i in inputs])
    spread = np.linalg.norm(base - base.mean(0), axis=1).mean()
    rng = np.random.default_rng(0)
    changes = {
        "all streamline counts x2 (SC + log10 2 on edges)": lambda i, g: (i.windows, _shift(i.sc, np.log10(2))),
        "all streamline counts x0.5": lambda i, g: (i.windows, _shift(i.sc, -np.log10(2))),
        "the other group's tracts (8 tract edges moved)": lambda i, g: (i.windows, _other_group(i, g, only)),
        "SC edges rewired (same values, shuffled pairs)": lambda i, g: (i.windows, _shuffled(i.sc, rng)),
        "connectome removed (zeros)": lambda i, g: (i.windows, np.zeros_like(i.sc)),
        "series x2": lambda i, g: (2 * i.windows, i.sc),
    }
    print(f"{len(inputs)} participants; mean distance of a participant's fused features to the mean: {spread:.4f}")
    for name, change in changes.items():
        moved = [
            np.linalg.norm(_features(model, *change(i, g)) - b) for i, g, b in zip(inputs, groups, base, strict=True)
        ]
        print(f"  {name:<48} moves the features by {np.mean(moved):.4f} ({np.mean(moved) / spread:.2f} x the spread)")


def _shift(sc: np.ndarray, by: float) -> np.ndarray:
    return np.where(sc != 0, sc + by, 0)


def _other_group(inputs: ModelInputs, group: str, only: dict[str, list]) -> np.ndarray:
    """The connectome with the edges of ``group``'s own tracts moved onto the other group's tract pairs."""
    row = {int(label): k for k, label in enumerate(inputs.labels)}
    other = "rewired" if group == "reference" else "reference"
    out = inputs.sc.copy()
    for (a, b), (c, d) in zip(only[group], only[other], strict=True):
        out[row[c], row[d]] = out[row[d], row[c]] = inputs.sc[row[a], row[b]]
        out[row[a], row[b]] = out[row[b], row[a]] = 0.0
    return out


def _shuffled(sc: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rows, cols = np.triu_indices(len(sc), k=1)
    values = sc[rows, cols][rng.permutation(len(rows))]
    out = np.zeros_like(sc)
    out[rows, cols] = values
    return out + out.T


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "demo"))
