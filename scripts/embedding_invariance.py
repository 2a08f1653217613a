"""Measure what the demo bundle's subject features are invariant to (docs/demo.md, "What the embeddings see").

Embeds each participant's cached model inputs (``WORK/sub-*/model/sub-*_model_input.npz``, written by the
participant level) with the connectome and the series changed in controlled ways, and compares the change of
the fused subject feature vector with the spread of that vector across participants.

    python scripts/embedding_invariance.py demo/work
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from brainsymphony import load_bundle
from pipelines.model.embed import embed_participant
from pipelines.model.inputs import load_model_inputs

BUNDLE = Path(__file__).resolve().parent.parent / "brainsymphony" / "weights" / "bsym-demo-sim"


def _features(model, windows, sc) -> np.ndarray:
    found = embed_participant(model, windows, sc, attention=False, reconstruction_folds=0)
    return found.subject_vector()["fused"]


def main(work: Path) -> None:
    model, _ = load_bundle(BUNDLE)
    model.eval()
    inputs = [load_model_inputs(p) for p in sorted(work.glob("sub-*/model/sub-*_model_input.npz"))]
    base = np.stack([_features(model, i.windows, i.sc) for i in inputs])
    spread = np.linalg.norm(base - base.mean(0), axis=1).mean()
    rng = np.random.default_rng(0)
    changes = {
        "all streamline counts x2 (SC + log10 2 on edges)": lambda w, sc: (w, np.where(sc != 0, sc + np.log10(2), 0)),
        "all streamline counts x0.5": lambda w, sc: (w, np.where(sc != 0, sc - np.log10(2), 0)),
        "SC edges rewired (same values, shuffled pairs)": lambda w, sc: (w, _shuffled(sc, rng)),
        "connectome removed (zeros)": lambda w, sc: (w, np.zeros_like(sc)),
        "series x2": lambda w, sc: (2 * w, sc),
    }
    print(f"{len(inputs)} participants; mean distance of a participant's fused features to the mean: {spread:.4f}")
    for name, change in changes.items():
        moved = [
            np.linalg.norm(_features(model, *change(i.windows, i.sc)) - b) for i, b in zip(inputs, base, strict=True)
        ]
        print(f"  {name:<48} moves the features by {np.mean(moved):.4f} ({np.mean(moved) / spread:.2f} x the spread)")


def _shuffled(sc: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rows, cols = np.triu_indices(len(sc), k=1)
    values = sc[rows, cols][rng.permutation(len(rows))]
    out = np.zeros_like(sc)
    out[rows, cols] = values
    return out + out.T


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "demo/work"))
