"""Would the demo bundle's embeddings see a planted effect? A pre-test on simulated parcel signals.

Simulates two groups of participants that differ by one effect, makes model windows as the participant level
does (resampled to the bundle's TR, cut, robust-scaled), and scores the functional subject features, the FC
edges and mean FC with the group probe (ridge classifier, nested cross-validation, permutation p). Quoted in
docs/demo.md ("What the embeddings see").

    python scripts/effect_sensitivity.py dedifferentiation 16
    python scripts/effect_sensitivity.py frequency 16
"""

from __future__ import annotations

import sys

import numpy as np

from brainsymphony import load_bundle
from bsym_cli.levels.model_stage import default_bundle_path
from pipelines.fmri.resample import resample_to_tr
from pipelines.fmri.windows import cut_windows
from pipelines.group.baselines import edges
from pipelines.group.probes import score_probe
from pipelines.model.embed import embed_participant
from pipelines.model.scaling import robust_statistics, scale_windows
from simulation.atlas import build_demo_atlas
from simulation.simulate import coupling_for_age, simulate_bold, simulate_connectome

#: Within-network weights x (1 - DEDIFFERENTIATION), between-network weights raised to keep the total.
DEDIFFERENTIATION = 0.6
FREQUENCIES_HZ = (0.05, 0.035)


def main(effect: str, participants: int) -> None:
    path = default_bundle_path()
    if path is None:
        raise SystemExit("No shipped bundle found (brainsymphony/weights/bsym-demo-sim).")
    model, metadata = load_bundle(path)
    model.eval()
    atlas = build_demo_atlas()
    networks = atlas.table["network"].to_numpy()
    within = networks[:, None] == networks[None, :]
    features, fc, groups = [], [], []
    for number in range(participants):
        rng = np.random.default_rng(100 + number)
        group = number % 2
        sc = simulate_connectome(atlas.centroids, rng, hemispheres=atlas.hemispheres)
        if effect == "dedifferentiation" and group:
            raise_between = DEDIFFERENTIATION * sc[within].sum() / sc[~within].sum()
            sc = np.where(within, sc * (1 - DEDIFFERENTIATION), sc * (1 + raise_between))
        frequency = FREQUENCIES_HZ[group] if effect == "frequency" else FREQUENCIES_HZ[0]
        signals = simulate_bold(
            sc, t_r=1.0, n_frames=300, coupling=coupling_for_age(50), rng=rng, frequency_hz=frequency
        )
        signals = signals + 0.5 * signals.std() * rng.standard_normal(signals.shape)  # (R, T)
        windows, _ = cut_windows(resample_to_tr(signals.T, 1.0, metadata.tr or 0.72), model.config.n_timepoints)
        scaled, _ = scale_windows(windows, *robust_statistics(windows))
        found = embed_participant(model, scaled, None, attention=False, reconstruction_folds=0)
        features.append(found.subject_vector()["functional"])
        fc.append(edges(np.corrcoef(signals)))
        groups.append("planted" if group else "reference")
    fc_edges = np.stack(fc)
    for name, x in (("embeddings", np.stack(features)), ("FC edges", fc_edges), ("mean FC", fc_edges.mean(1)[:, None])):
        metrics = score_probe(x, np.array(groups), name="group", seed=0, permutations=200).metrics
        print(f"{effect}: {name:<10} accuracy {metrics['accuracy']:.2f}, p {metrics['permutation_p']:.3f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 16)
