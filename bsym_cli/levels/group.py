"""Group level: aggregate participant outputs, probe targets of ``participants.tsv``, identify networks.

Reads only OUTPUT_DIR (the raw data need not be present) and never modifies participant outputs;
writes under ``OUTPUT_DIR/group/``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from bsym_cli.cli.config import Config
from bsym_cli.utils.errors import MissingInputError, NothingSelectedError, OptionError
from bsym_cli.utils.logs import get_logger
from pipelines.atomic import atomic_path, locked, remove_stale_temporaries, write_json
from pipelines.model.features import FEATURE_KINDS, embedding_columns

_FEATURES = re.compile(r"^sub-(?P<sub>[a-zA-Z0-9]+)(?:_ses-(?P<ses>[a-zA-Z0-9]+))?_desc-bsym_features\.tsv$")


def gather_features(out_dir: Path, subjects: tuple[str, ...] = (), sessions: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per participant (and session) from ``sub-*/[ses-*/]model/*_desc-bsym_features.tsv``.

    Returns a table keyed by ``participant_id`` (``sub-<label>``) and ``session_id`` (``ses-<label>`` or n/a).
    """
    rows = []
    for path in sorted(Path(out_dir).glob("sub-*/**/model/*_desc-bsym_features.tsv")):
        match = _FEATURES.match(path.name)
        if not match or (subjects and match["sub"] not in subjects) or (sessions and match["ses"] not in sessions):
            continue
        row = pd.read_csv(path, sep="\t", na_values="n/a")
        keys = pd.DataFrame(
            {
                "participant_id": [f"sub-{match['sub']}"] * len(row),
                "session_id": [f"ses-{match['ses']}" if match["ses"] else np.nan] * len(row),
            }
        )
        rows.append(pd.concat([keys, row.drop(columns=["participant_id", "session_id"], errors="ignore")], axis=1))
    if not rows:
        raise NothingSelectedError(
            f"No *_desc-bsym_features.tsv found in {out_dir} for the selected participants; run the "
            "participant level first (without --skip model)."
        )
    table = pd.concat(rows, ignore_index=True)
    return table.loc[:, ~table.columns.duplicated()]


def feature_columns(table: pd.DataFrame) -> tuple[str, list[str]]:
    """The embedding kind probes use (fused, else functional, else structural) and its columns."""
    for kind in FEATURE_KINDS:
        cols = embedding_columns(table.columns, kind)
        if cols and table[cols].notna().all(axis=None):
            return kind, cols
    raise MissingInputError("The feature tables have no complete embedding columns (fused_000, ...).")


def read_participants(out_dir: Path, bids_dir: Path | None) -> pd.DataFrame:
    """``participants.tsv`` from OUTPUT_DIR (copied there at participant level), else from BIDS_DIR."""
    for folder in (out_dir, bids_dir):
        if folder and (Path(folder) / "participants.tsv").exists():
            return pd.read_csv(
                Path(folder) / "participants.tsv", sep="\t", na_values="n/a", dtype={"participant_id": str}
            )
    raise MissingInputError(f"No participants.tsv in {out_dir} or {bids_dir}; --target needs it.")


def run_group(config: Config) -> None:
    """Write the group tables, probes and network identification (see module docstring)."""
    from pipelines.group.probes import run_probe
    from pipelines.heads import save_head

    ex = config.execution
    log = get_logger()
    out_dir = Path(ex.output_dir)
    group = out_dir / "group"
    with locked(group, "group"):
        remove_stale_temporaries(group)
    table = gather_features(out_dir, ex.participant_label, ex.session_label)
    log.info("Group: %d participant row(s) from %s", len(table), out_dir)
    if config.model.scaling == "study":
        table = _rescale_study(config, table, group)
        if table is None:  # a non-zero torchrun rank: rank 0 writes everything
            return
    with locked(group, "group"), atomic_path(group / "desc-bsym_features.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
    write_json(
        group / "desc-bsym_features.json",
        {
            "Scaling": config.model.scaling,
            "Participants": len(table),
            "Description": "One row per participant (and session): mean over regions and windows of each stream's "
            "region embeddings.",
        },
    )
    kind, columns = feature_columns(table)
    if config.model.targets:
        participants = read_participants(out_dir, ex.bids_dir if Path(ex.bids_dir).exists() else None)
        merged = table.merge(participants, on="participant_id", how="left")
        predictions = merged[["participant_id", "session_id"]].copy()
        metrics = {}
        baselines = _baseline_features(out_dir, table, config.workflow.atlas)
        rows = []
        for target in config.model.targets:
            if target not in participants.columns:
                raise OptionError(
                    f"--target {target}: no such column in participants.tsv (columns: "
                    f"{', '.join(participants.columns)})."
                )
            keep = merged[target].notna().to_numpy()
            values = merged.loc[keep, target].to_numpy()
            result = run_probe(
                merged.loc[keep, columns].to_numpy(),
                values,
                name=target,
                feature_names=columns,
                seed=config.workflow.seed,
            )
            predictions.loc[keep, f"{target}_predicted"] = result.predictions
            predictions[f"{target}_observed"] = merged[target]
            metrics[target] = {**result.metrics, "features": kind}
            head_dir = save_head(result.head, group / "heads" / f"target-{target}")
            metrics[target]["head"] = str(head_dir)
            log.info("Probe %s (%s, %s embeddings): %s", target, result.task, kind, _short(result.metrics))
            metrics[target]["baselines"] = _probe_baselines(baselines, keep, values, target, config.workflow.seed)
            rows += _score_rows(target, "embeddings", result.metrics)
            for name, found in metrics[target]["baselines"].items():
                rows += _score_rows(target, name, found)
        with atomic_path(group / "desc-bsym_predictions.tsv") as tmp:
            predictions.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
        write_json(group / "desc-bsym_probes.json", metrics)
        _write_probe_table(group, pd.DataFrame(rows))
    _network_identification(out_dir, table, atlas_label=config.workflow.atlas, seed=config.workflow.seed)


def _rescale_study(config: Config, table: pd.DataFrame, group: Path) -> pd.DataFrame | None:
    """Replace the embedding columns by a re-embedding with study-wide scaling (None on non-zero ranks)."""
    from bsym_cli.levels.runtime import resolve_device, resolve_precision
    from bsym_cli.levels.study import study_embeddings

    device = resolve_device(config.model.device)
    result = study_embeddings(config, table, device, precision=resolve_precision(config.model.precision, device))
    if result is None:
        return None
    study, statistics = result
    embedding = embedding_columns(table.columns)
    rescaled = table.drop(columns=embedding).merge(study, on=["participant_id", "session_id"], how="left")
    with atomic_path(group / "desc-studyscaling_stat.tsv") as tmp:
        statistics.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
    return rescaled


def _baseline_features(out_dir: Path, table: pd.DataFrame, atlas: str) -> dict[str, np.ndarray | str]:
    """:func:`pipelines.group.baselines.baseline_features` from each row's connectomes in OUTPUT_DIR."""
    from pipelines.group.baselines import baseline_features

    fc, sc, names = [], [], []
    for pid, sid in zip(table["participant_id"], table["session_id"], strict=True):
        folder = out_dir / pid / (sid if isinstance(sid, str) else "")
        prefix = f"{pid}_{sid}" if isinstance(sid, str) else pid
        fc.append(_mean_relmat(folder.glob(f"func/{prefix}_*atlas-{atlas}_stat-pearsoncorrelation_relmat.tsv")))
        sc.append(_mean_relmat(folder.glob(f"dwi/{prefix}_*atlas-{atlas}_stat-signedsc_relmat.tsv")))
        names.append(f"{pid} {sid}" if isinstance(sid, str) else pid)
    return baseline_features(fc, sc, names)


def _mean_relmat(paths) -> np.ndarray | None:
    """Mean (R, R) of the ``relmat`` TSVs (one per run), or None when there are none."""
    matrices = [pd.read_csv(p, sep="\t", index_col=0, na_values="n/a").to_numpy(float) for p in sorted(paths)]
    return np.mean(matrices, axis=0) if matrices else None


def _probe_baselines(
    baselines: dict[str, np.ndarray | str], keep: np.ndarray, values: np.ndarray, target: str, seed: int
) -> dict[str, dict]:
    """Score every baseline feature set on the embeddings' rows, folds and permutations."""
    from pipelines.group.probes import score_probe

    log = get_logger()
    results: dict[str, dict] = {}
    for name, features in baselines.items():
        if isinstance(features, str):
            results[name] = {"skipped": features}
            log.info("Probe %s, baseline %s: skipped (%s)", target, name, features)
            continue
        found = score_probe(features[keep], values, name=target, seed=seed).metrics
        results[name] = {**found, "n_features": int(features.shape[1])}
        log.info("Probe %s, baseline %s (%d features): %s", target, name, features.shape[1], _short(found))
    return results


def _score_rows(target: str, features: str, metrics: dict) -> list[dict]:
    """One row of ``desc-bsym_probes.tsv``: the headline score with its interval and permutation p."""
    if "skipped" in metrics:
        return [{"target": target, "features": features, "skipped": metrics["skipped"]}]
    metric = "pearson_r" if metrics["task"] == "regression" else "accuracy"
    low, high = metrics["interval95"]
    return [
        {
            "target": target,
            "features": features,
            "n": metrics["n"],
            "metric": metric,
            "score": metrics[metric],
            "ci_low": low,
            "ci_high": high,
            "permutation_p": metrics.get("permutation_p"),
            "skipped": None,
        }
    ]


def _write_probe_table(group: Path, table: pd.DataFrame) -> None:
    """``desc-bsym_probes.tsv``, its figure and a one-page HTML report of both (the group report)."""
    import html

    from pipelines.figures import probe_comparison_figure

    with atomic_path(group / "desc-bsym_probes.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.4g")
    figure = probe_comparison_figure(table, group / "desc-bsym_probes.svg")
    body = table.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.3g}", border=0)
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>bsym-app group probes</title></head><body>\n"
        "<h1>Probes: embeddings beside their inputs</h1>\n<p>Each row is scored with the same nested "
        "cross-validation folds and the same permutation test (target shuffled, whole nested cross-validation "
        "rerun). Interval: 95% bootstrap over participants.</p>\n"
        f"{body}\n<p><img src='{html.escape(figure.name)}' alt='probe scores'></p>\n</body></html>\n"
    )
    with atomic_path(group / "desc-bsym_report.html") as tmp:
        Path(tmp).write_text(page)


def _short(metrics: dict) -> str:
    keys = ("pearson_r", "spearman_rho", "mse") if metrics["task"] == "regression" else ("accuracy", "f1", "auc")
    text = ", ".join(f"{k}={metrics[k]:.3f}" for k in keys)
    low, high = metrics["interval95"]
    p_value = metrics.get("permutation_p")
    return text + f", 95% interval [{low:.2f}, {high:.2f}]" + ("" if p_value is None else f", p={p_value:.3f}")


def _network_identification(out_dir: Path, table: pd.DataFrame, *, atlas_label: str, seed: int) -> None:
    """Cluster the mean region embeddings; compare with the atlas's ``network`` column."""
    from bsym_cli.bids.atlases import resolve_atlas
    from pipelines.group.networks import identify_networks, plot_contingency

    log = get_logger()
    atlases = out_dir / "sourcedata" / "atlases"
    try:
        atlas = resolve_atlas(atlas_label, atlas_dataset=atlases)
    except MissingInputError:
        log.warning("No atlas copy under %s; skipping network identification.", atlases)
        return
    if atlas.networks is None:
        log.info("Atlas %s has no 'network' column; skipping network identification.", atlas.label)
        return
    for kind in FEATURE_KINDS:
        files = []
        for pid, sid in zip(table["participant_id"], table["session_id"], strict=True):
            ses = f"_{sid}" if isinstance(sid, str) else ""
            folder = out_dir / pid / (sid if isinstance(sid, str) else "") / "model"
            files += list(folder.glob(f"{pid}{ses}_atlas-{atlas.label}_desc-{kind}_embedding.tsv"))
        if files:
            break
    else:
        log.warning("No region embeddings found; skipping network identification.")
        return
    stack = np.stack([pd.read_csv(f, sep="\t").iloc[:, 2:].to_numpy(float) for f in files])
    result = identify_networks(stack, atlas.networks, seed=seed)
    group = out_dir / "group"
    write_json(
        group / f"atlas-{atlas.label}_desc-networks_stat.json",
        {
            "Embedding": kind,
            "Participants": len(files),
            "Clusters": result.n_clusters,
            "AdjustedRandIndex": result.adjusted_rand,
            "NormalizedMutualInformation": result.normalized_mutual_info,
        },
    )
    labels = pd.DataFrame(
        {"index": atlas.indices, "name": atlas.names, "network": atlas.networks, "cluster": result.clusters}
    )
    with atomic_path(group / f"atlas-{atlas.label}_desc-networks_dseg.tsv") as tmp:
        labels.to_csv(tmp, sep="\t", index=False)
    with atomic_path(group / f"atlas-{atlas.label}_desc-networks_figure.svg") as tmp:
        plot_contingency(result, tmp)
    log.info(
        "Network identification (%s embeddings, k=%d): ARI %.2f, NMI %.2f",
        kind,
        result.n_clusters,
        result.adjusted_rand,
        result.normalized_mutual_info,
    )
