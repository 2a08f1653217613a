"""``bsym demo --check DIR``: compare a demo run's outputs with the simulation's ground truth.

Each stage is held to a threshold that a working pipeline passes with margin on the demo and a broken stage
fails (see docs/demo.md, "Checks against the truth"):

* **fMRI**: every recovered parcel series against the simulated parcel signal. Median r >= 0.5 and at least
  90% of parcels correlating best with their own truth (shuffled parcel labels give about 0%).
* **dMRI**: the planted tracts in the streamline-count connectome. The median planted edge ranks in the top
  1% of all region pairs and the planted edges carry at least 10x their share by chance (an atlas left
  unplaced puts them at random ranks).
* **model**: masked-region reconstruction R^2, where 0 is predicting each region by its mean (the per-region
  mean baseline). The median over participants of each one's median regional R^2 must be above 0 (random
  weights give far below 0).
* **probes**: reported with their permutation p-value, interval and baselines; not judged, because a probe at
  demo size may rightly find nothing. Below the size at which only r > 0.5 could be significant, one line
  says so instead of printing a bare r.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bsym_cli.utils.errors import MissingInputError
from pipelines.group.baselines import edges
from pipelines.group.significance import smallest_detectable_r

#: Thresholds of the checks (module docstring).
FMRI_MEDIAN_R = 0.5
FMRI_OWN_MATCH = 0.9
FMRI_GOOD_R = 0.9
DWI_TOP_SHARE = 0.01
DWI_CHANCE_FACTOR = 10.0
MODEL_MEDIAN_R2 = 0.0
#: A probe is called too small to mean anything when r must exceed this to reach p < 0.05.
PROBE_USEFUL_R = 0.5


@dataclass
class CheckResult:
    """One check: a printed line, whether it passed (None: reported only) and its numbers."""

    stage: str
    line: str
    passed: bool | None
    values: dict = field(default_factory=dict)

    def __str__(self) -> str:
        verdict = {True: "PASS", False: "FAIL", None: "    "}[self.passed]
        return f"{verdict}  {self.stage:<6} {self.line}"


def check_demo(
    root: str | Path, outputs: str | Path | None = None, work: str | Path | None = None
) -> list[CheckResult]:
    """Run every check on the demo study at ``root``, its outputs (default ``root/bids/derivatives/bsym``) and
    work directory (default ``root/work``, for the cached model inputs of the identifiability check)."""
    root = Path(root)
    truth = root / "truth"
    outputs = Path(outputs) if outputs else root / "bids" / "derivatives" / "bsym"
    work = Path(work) if work else root / "work"
    for folder in (truth, outputs):
        if not folder.is_dir():
            raise MissingInputError(
                f"{folder} does not exist. --check needs a demo study (bsym demo DIR) that bsym-app has run on "
                "(make demo does both)."
            )
    participants = sorted(p.name.removesuffix("_params.json") for p in truth.glob("sub-*_params.json"))
    if not participants:
        raise MissingInputError(f"{truth} holds no sub-*_params.json; is {root} a folder written by bsym demo?")
    return [
        check_fmri(outputs, truth, participants, _atlas_names(root)),
        check_dwi(outputs, truth, participants),
        check_model(outputs, participants),
        check_identifiability(outputs, work, participants),
        *check_probes(outputs),
    ]


def _atlas_names(root: Path) -> list[str]:
    """Region names in atlas index order (the order of the truth's rows)."""
    tables = sorted((root / "atlases").glob("tpl-*/*_dseg.tsv"))
    if not tables:
        raise MissingInputError(f"No atlas table under {root / 'atlases'}; rebuild the demo with bsym demo.")
    return pd.read_csv(tables[0], sep="\t").sort_values("index")["name"].tolist()


def _judged(stage: str, line: str, passed: bool, values: dict, missing: list[str]) -> CheckResult:
    """A judged check; participants without outputs are listed and fail it."""
    if missing:
        line += f"; missing: {', '.join(missing)}"
    return CheckResult(stage, line, passed and not missing, values)


def _first(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.glob(pattern))
    return found[0] if found else None


def _correlations(recovered: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Pearson r of every recovered series (R, T) with every true series (R, T): (R, R)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        a = (recovered - recovered.mean(1, keepdims=True)) / recovered.std(1, keepdims=True)
        b = (truth - truth.mean(1, keepdims=True)) / truth.std(1, keepdims=True)
    return a @ b.T / recovered.shape[1]


def check_fmri(outputs: Path, truth: Path, participants: list[str], names: list[str]) -> CheckResult:
    """Recovered parcel series against the simulated parcel signals (the first BOLD run of each participant)."""
    medians, worst, good, own, missing = [], [], [], [], []
    for sub in participants:
        series_file = _first(outputs / sub, "**/func/*_stat-mean_timeseries.tsv")
        if series_file is None:
            missing.append(sub)
            continue
        sidecar = json.loads(series_file.with_suffix(".json").read_text())
        simulated = np.load(truth / f"{sub}_timeseries.npy").astype(np.float64)
        kept = np.setdiff1d(np.arange(sidecar["DummyScans"], simulated.shape[1]), sidecar.get("CensoredFrames", []))
        table = pd.read_csv(series_file, sep="\t", na_values="n/a")
        position = {name: i for i, name in enumerate(names)}
        rows = [position[c] for c in table.columns]
        recovered = table.to_numpy(float).T  # (R, T)
        finite = np.isfinite(recovered).all(axis=1)
        r = _correlations(recovered[finite], simulated[rows][:, kept][finite])
        own_r = np.diag(r)
        medians.append(float(np.median(own_r)))
        worst.append(float(own_r.min()))
        good.append(int((own_r >= FMRI_GOOD_R).sum()))
        own.append(float((r.argmax(axis=1) == np.arange(len(r))).mean()))
    if missing and not medians:
        return CheckResult("fMRI", f"no parcel time series in {outputs} for {', '.join(missing)}", False)
    values = {
        "participants": len(medians),
        "median_r": float(np.median(medians)),
        "worst_r": float(np.min(worst)),
        "parcels_r_0.9": int(np.median(good)),
        "own_match": float(np.min(own)),
        "missing": missing,
    }
    passed = values["median_r"] >= FMRI_MEDIAN_R and values["own_match"] >= FMRI_OWN_MATCH
    line = (
        f"parcel series vs truth ({len(medians)} participants): median r {values['median_r']:.2f}, worst parcel "
        f"{values['worst_r']:.2f}; {values['parcels_r_0.9']} of {len(names)} parcels at r >= {FMRI_GOOD_R} "
        f"(median participant); every participant's parcels match their own truth best in >= "
        f"{100 * values['own_match']:.0f}% (needs median r >= {FMRI_MEDIAN_R}, own match >= "
        f"{100 * FMRI_OWN_MATCH:.0f}%)"
    )
    return _judged("fMRI", line, passed, values, missing)


def check_dwi(outputs: Path, truth: Path, participants: list[str]) -> CheckResult:
    """Ranks and streamline share of the planted tracts in each participant's streamline-count connectome."""
    tracts = json.loads((truth / "dwi_tracts.json").read_text())["tracts"]
    every_tract = [t["indices"] for t in tracts]
    median_ranks, shares, missing = [], [], []
    pairs = 0
    for sub in participants:
        relmat = _first(outputs / sub, "**/dwi/*_stat-streamlinecount_relmat.tsv")
        if relmat is None:
            missing.append(sub)
            continue
        params = json.loads((truth / f"{sub}_params.json").read_text())
        planted = {tuple(sorted(pair)) for pair in params.get("dwi_tract_indices", every_tract)}
        counts = pd.read_csv(relmat, sep="\t", index_col=0).to_numpy(float)
        values = edges(counts)
        pairs = len(values)
        rows, cols = np.triu_indices(len(counts), k=1)
        is_planted = np.array([(a + 1, b + 1) in planted for a, b in zip(rows, cols, strict=True)])
        order = np.argsort(-values, kind="stable")
        rank = np.empty(pairs)
        rank[order] = np.arange(1, pairs + 1)
        median_ranks.append(float(np.median(rank[is_planted])))
        shares.append(float(values[is_planted].sum() / max(values.sum(), 1.0)))
    if missing and not median_ranks:
        return CheckResult("dMRI", f"no streamline-count connectome in {outputs} for {', '.join(missing)}", False)
    chance = len(planted) / pairs
    summary = {
        "participants": len(median_ranks),
        "planted_edges": len(planted),
        "pairs": pairs,
        "median_rank": float(np.median(median_ranks)),
        "worst_median_rank": float(np.max(median_ranks)),
        "share": float(np.median(shares)),
        "worst_share": float(np.min(shares)),
        "chance_share": chance,
        "missing": missing,
    }
    passed = (
        summary["worst_median_rank"] <= DWI_TOP_SHARE * pairs and summary["worst_share"] >= DWI_CHANCE_FACTOR * chance
    )
    line = (
        f"{len(planted)} planted tracts ({len(median_ranks)} participants): median rank "
        f"{summary['median_rank']:.0f} of {pairs:,} edges (worst participant {summary['worst_median_rank']:.0f}); "
        f"{100 * summary['share']:.1f}% of streamlines on them (worst {100 * summary['worst_share']:.1f}%, "
        f"chance {100 * chance:.2f}%) (needs median rank in the top {100 * DWI_TOP_SHARE:g}% and "
        f">= {DWI_CHANCE_FACTOR:g}x chance)"
    )
    return _judged("dMRI", line, passed, summary, missing)


def check_model(outputs: Path, participants: list[str]) -> CheckResult:
    """Masked-region reconstruction R^2 of each participant against the per-region-mean baseline (R^2 = 0)."""
    medians, above, missing = [], [], []
    for sub in participants:
        table = _first(outputs / sub, "**/model/*_desc-bsym_reconstruction.tsv")
        if table is None:
            missing.append(sub)
            continue
        r2 = pd.read_csv(table, sep="\t", na_values="n/a")["r2"].dropna().to_numpy(float)
        medians.append(float(np.median(r2)))
        above.append(float((r2 > 0).mean()))
    if missing and not medians:
        return CheckResult("model", f"no reconstruction table in {outputs} for {', '.join(missing)}", False)
    values = {
        "participants": len(medians),
        "median_r2": float(np.median(medians)),
        "worst_median_r2": float(np.min(medians)),
        "regions_above_baseline": float(np.median(above)),
        "missing": missing,
    }
    passed = values["median_r2"] > MODEL_MEDIAN_R2
    line = (
        f"masked-region reconstruction ({len(medians)} participants): median R^2 {values['median_r2']:.2f} "
        f"(worst participant {values['worst_median_r2']:.2f}) against 0 for each region's own mean; "
        f"{100 * values['regions_above_baseline']:.0f}% of regions beat that baseline (needs median R^2 > "
        f"{MODEL_MEDIAN_R2:g})"
    )
    return _judged("model", line, passed, values, missing)


def check_identifiability(outputs: Path, work: Path, participants: list[str]) -> CheckResult:
    """Subject features of each participant's first and second half of windows: own halves against others.

    Embeds the model inputs the participant level cached in ``work`` with the bundle the run used (the shipped
    one; other bundles are not reloaded), from the series alone (functional) and with the connectome (fused;
    both halves share it, so fused identification is expected). A participant is identified when its second
    half correlates best with its own first half (:func:`_identification`).
    """
    from brainsymphony import load_bundle
    from bsym_cli.levels.model_stage import DEFAULT_BUNDLE, default_bundle_path
    from pipelines.model.embed import embed_participant
    from pipelines.model.inputs import cache_path, load_model_inputs

    sidecar = _first(outputs / participants[0], "**/model/*_desc-bsym_features.json")
    bundle = json.loads(sidecar.read_text()).get("Bundle") if sidecar else None
    inputs = [load_model_inputs(p) for sub in participants if (p := cache_path(work, sub[4:], sub)).exists()]
    usable = [i for i in inputs if i.windows is not None and len(i.windows) >= 2]
    path = default_bundle_path()
    if sidecar is None:
        reason = f"no model outputs in {outputs}"
    elif bundle != DEFAULT_BUNDLE or path is None:
        reason = f"the run used the bundle {bundle!r}; only the shipped {DEFAULT_BUNDLE!r} is reloaded"
    elif len(usable) < 2:
        reason = f"{len(usable)} participant(s) in {work} have two or more windows to split into halves"
    else:
        reason = ""
    if reason or path is None:
        return CheckResult("model", f"identifiability: not measured ({reason})", None)
    model, _ = load_bundle(path)
    model.eval()
    scores = {}
    for kind, with_sc in (("functional", False), ("fused", True)):
        halves = []
        for run in usable:
            assert run.windows is not None  # usable
            middle = len(run.windows) // 2
            for part in (run.windows[:middle], run.windows[middle:]):
                found = embed_participant(
                    model, part, run.sc if with_sc else None, attention=False, reconstruction_folds=0
                )
                halves.append(found.subject_vector()[kind])
        scores[kind] = _identification(np.stack(halves))
    windows = min(len(run.windows) for run in usable if run.windows is not None) // 2
    line = f"identifiability ({len(usable)} participants, halves of >= {windows} window(s); chance 1 identified): " + (
        "; ".join(
            f"{kind} features of a participant's two halves correlate r {own:.2f} against {others:.2f} across "
            f"participants, {identified} identified"
            for kind, (own, others, identified) in scores.items()
        )
    )
    line += " (the fused halves share one connectome)"
    values = {kind: dict(zip(("own_r", "other_r", "identified"), found, strict=True)) for kind, found in scores.items()}
    return CheckResult("model", line, None, values)


def _identification(halves: np.ndarray) -> tuple[float, float, int]:
    """Halves (2P, D), a participant's first then second: mean own r, mean other r, participants identified.

    The vectors are centred on the mean of all halves, so what all participants share does not count.
    """
    vectors = halves - halves.mean(axis=0)
    count = len(vectors) // 2
    similarity = np.corrcoef(vectors[0::2], vectors[1::2])[:count, count:]  # (first halves, second halves)
    own = float(np.diag(similarity).mean())
    others = float(similarity[~np.eye(count, dtype=bool)].mean())
    return own, others, int((similarity.argmax(axis=0) == np.arange(count)).sum())


def check_probes(outputs: Path) -> list[CheckResult]:
    """The group probes with their uncertainty and baselines, one line per target (reported, not judged)."""
    probes = outputs / "group" / "desc-bsym_probes.json"
    if not probes.exists():
        return [CheckResult("probe", f"no group probes ({probes} is missing; run the group level with --target)", None)]
    results = []
    for target, metrics in json.loads(probes.read_text()).items():
        n = metrics["n"]
        metric = "pearson_r" if metrics["task"] == "regression" else "accuracy"
        needed = smallest_detectable_r(n)
        if metric == "pearson_r" and needed > PROBE_USEFUL_R:
            line = (
                f"{target}: n = {n} is too few participants for a probe to mean anything (only r > {needed:.2f} "
                f"could reach p < 0.05); rerun with more participants (make demo PARTICIPANTS=24)"
            )
        else:
            scores = [("embeddings", metrics)] + [
                (name, found) for name, found in metrics.get("baselines", {}).items() if "skipped" not in found
            ]
            line = f"{target} (n = {n}, {metric}, 95% interval, permutation p): " + "; ".join(
                f"{name} {found[metric]:.2f} [{found['interval95'][0]:.2f}, {found['interval95'][1]:.2f}] "
                f"p={found.get('permutation_p', float('nan')):.3f}"
                for name, found in scores
            )
        results.append(CheckResult("probe", line, None, {"target": target, "n": n}))
    return results
