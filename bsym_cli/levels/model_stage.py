"""The model stage of a participant: load and check the weights, scale, embed, write the results.

Runs in the main process after the Nipype graph. Writes region embeddings per stream, the subject-level
feature row, predictions of every ``--head``, masked-region reconstruction quality, the attention maps
(HDF5, float16) and per-parcel maps painted into the atlas (NIfTI, viewable in any viewer).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bsym_cli.bids.atlases import Atlas
from bsym_cli.bids.derivatives import DerivativesWriter, output_path, sidecar_path
from bsym_cli.bids.inputs import ParticipantInputs
from bsym_cli.cli.config import Config
from bsym_cli.levels.participant import ModelContract, RunResult
from bsym_cli.levels.runtime import freed_memory_kept
from bsym_cli.utils.errors import InputDataError, MissingInputError, OptionError
from bsym_cli.utils.logs import get_logger
from pipelines.atomic import is_temporary
from pipelines.fingerprint import code_fingerprint
from pipelines.model.features import feature_names, feature_values
from pipelines.model.scaling import scaling_used

#: Modules whose code computes and writes the model outputs (with what they import): an edit reruns the model
#: stage, as does an edit of this module's own source (its imports, which reach the whole workflow, are not
#: followed).
MODEL_CODE = (
    "bsym_cli.bids.derivatives",
    "brainsymphony.bundle",
    "pipelines.heads",
    "pipelines.model.features",
    "pipelines.model.maps",
    "pipelines.model.stage",
)

DEFAULT_BUNDLE = "bsym-demo-sim"


@dataclass
class Weights:
    """A loaded bundle: the model, its metadata, where it came from."""

    model: Any
    meta: Any
    path: Path
    #: Said at start, in the report and in the model sidecars (the demo weights on a real dataset).
    warning: str | None = None


def default_bundle_path() -> Path | None:
    """``$BSYM_WEIGHTS`` (the container's baked bundle), else ``brainsymphony/weights/<DEFAULT_BUNDLE>``."""
    if os.environ.get("BSYM_WEIGHTS") and Path(os.environ["BSYM_WEIGHTS"]).exists():
        return Path(os.environ["BSYM_WEIGHTS"])
    root = Path(str(resources.files("brainsymphony"))) / "weights"
    for candidate in (root / DEFAULT_BUNDLE, root / f"{DEFAULT_BUNDLE}.tar"):
        if candidate.exists():
            return candidate
    return None


def weights_path(weights: Path | None) -> Path:
    """``--weights`` (``weights``) or the packaged default; exit 66 with the fix if neither exists."""
    path = weights or default_bundle_path()
    if path is None:
        raise MissingInputError(
            "No weight bundle: the package ships none and --weights was not given. Pass "
            "--weights BUNDLE (e.g. from `bsym weights import-official` or `bsym pretrain`)."
        )
    if not Path(path).exists():
        raise MissingInputError(f"--weights {path}: no such file or folder.")
    return Path(path)


def read_contract(config: Config) -> ModelContract:
    """TR and T the weights expect (read from ``bundle.json`` only; published values if no bundle)."""
    if "model" in config.workflow.skip:
        return ModelContract()
    from brainsymphony.bundle import read_bundle_metadata

    meta = read_bundle_metadata(weights_path(config.model.weights))
    return ModelContract(t_r=meta.tr or ModelContract.t_r, n_timepoints=meta.n_timepoints)


def load_weights(config: Config, atlas: Atlas) -> Weights:
    """Load the bundle and check its data contract against the atlas (region count, labels)."""
    from brainsymphony import load_bundle

    path = weights_path(config.model.weights)
    model, meta = load_bundle(path)
    check_contract(meta, atlas, strict=config.workflow.strict_atlas, path=path)
    warning = demo_weights_warning(meta.name, config.execution.bids_dir)
    if warning:
        get_logger().warning(warning)
    return Weights(model=model, meta=meta, path=path, warning=warning)


def is_demo_study(bids_dir: Path) -> bool:
    """Whether ``bids_dir`` is a study made by ``bsym demo`` (its ``GeneratedBy`` says so)."""
    try:
        description = json.loads((Path(bids_dir) / "dataset_description.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return any(isinstance(g, dict) and g.get("Name") == "bsym demo" for g in description.get("GeneratedBy", []))


def demo_weights_warning(bundle: str, bids_dir: Path) -> str | None:
    """The warning due when the simulated demo weights embed a dataset that is not the demo study."""
    if bundle != DEFAULT_BUNDLE or is_demo_study(bids_dir):
        return None
    return (
        f"The weights are bsym-app's demo bundle '{DEFAULT_BUNDLE}', trained on simulated data only: the "
        f"embeddings of {bids_dir} are not scientifically meaningful. Import the published BrainSymphony "
        "weights with `bsym weights import-official CHECKPOINT_DIR BUNDLE` and pass --weights BUNDLE."
    )


def check_contract(meta, atlas: Atlas, *, strict: bool, path: Path) -> None:
    """Refuse a different region count; warn (or refuse with ``strict``) on different labels."""
    if meta.n_regions != len(atlas.indices):
        raise OptionError(
            f"--weights {path}: the bundle expects {meta.n_regions} regions ({meta.atlas}) but atlas "
            f"'{atlas.label}' has {len(atlas.indices)}; use the bundle's atlas (--atlas {meta.atlas}) "
            "or weights trained on this atlas."
        )
    if meta.labels_sha256 and meta.labels_sha256 != atlas.labels_sha256:
        first = _first_difference(getattr(meta, "labels", None), atlas)
        message = (
            f"--weights {path}: the atlas labels differ from those the weights were trained on "
            f"({meta.atlas} vs {atlas.label}{first}); region order may not match."
        )
        if strict:
            raise OptionError(message + " Refusing because of --strict-atlas.")
        get_logger().warning(message + " Continuing (use --strict-atlas to refuse).")


def _first_difference(names, atlas: Atlas) -> str:
    if not names:
        return ""
    for i, (a, b) in enumerate(zip(names, atlas.names, strict=False)):
        if a != b:
            return f"; first difference at region {i + 1}: '{a}' vs '{b}'"
    return ""


def features_path(output_dir: Path, part: ParticipantInputs) -> Path:
    """Where this participant's feature row goes (its existence marks a finished model stage)."""
    return output_path(output_dir, "features", _source(part))


def _source(part: ParticipantInputs) -> dict[str, str]:
    return {"sub": part.subject, **({"ses": part.session} if part.session else {})}


def run_model_stage(
    config: Config,
    part: ParticipantInputs,
    atlas: Atlas,
    writer: DerivativesWriter,
    runs: list[RunResult],
    weights: Weights,
    device: str,
    *,
    batch_size: int | None = None,
    precision: str = "fp32",
) -> dict[str, Path]:
    """Scale, embed and write one participant's model outputs; return the written paths.

    ``precision`` is the resolved ``--precision`` (``"fp32"`` or ``"bf16"``).
    """
    from brainsymphony.fused_stream import fused_stream_available
    from pipelines.model.inputs import cache_path, participant_inputs, save_model_inputs
    from pipelines.model.stage import run_model

    log = get_logger()
    meta, cfg = weights.meta, weights.model.config
    fmri_runs = [r for r in runs if r.kind == "fmri"] if cfg.has_functional else []
    dwi_runs = [r for r in runs if r.kind == "dmri"] if cfg.has_structural else []
    for kind, present, used in (
        ("BOLD runs are not embedded", any(r.kind == "fmri" for r in runs), fmri_runs),
        ("the connectome is not embedded", any(r.kind == "dmri" for r in runs), dwi_runs),
    ):
        if present and not used:
            log.warning(
                "%s: bundle %s has no %s stream; %s.",
                part.label,
                meta.name,
                "functional" if kind.startswith("BOLD") else "structural",
                kind,
            )
    if len(dwi_runs) > 1:
        log.info("%s: %d DWI series; the model uses the first.", part.label, len(dwi_runs))
    inputs, short_runs = participant_inputs(
        [r.files["windows"] for r in fmri_runs],
        dwi_runs[0].files["signed_relmat"] if dwi_runs else None,
        atlas.indices,
        meta.tr,
    )
    for position, frames, t_r in short_runs:
        log.warning(
            "%s: run %s has %d frames at TR %.2f s, fewer than one %d-frame window; the model skips it "
            "(its parcellation outputs are written).",
            part.label,
            fmri_runs[position].run_id,
            frames,
            t_r,
            meta.n_timepoints,
        )
    if inputs.windows is not None and not np.isfinite(inputs.windows).any():
        sources = ", ".join(str(r.written["timeseries"]) for r in fmri_runs)
        raise InputDataError(
            f"{part.label}: every region is n/a in every window ({sources}); the parcellation found "
            "no usable signal. Check the BOLD series and brain mask, or lower --min-coverage."
        )
    model_folder = features_path(config.execution.output_dir, part).parent
    if inputs.windows is None and inputs.sc is None:
        unusable = [
            kind
            for kind, kind_runs, has in (("BOLD", "fmri", cfg.has_functional), ("DWI", "dmri", cfg.has_structural))
            if not has and any(r.kind == kind_runs for r in runs)
        ]
        if unusable:
            raise InputDataError(
                f"{part.label}: bundle {meta.name} ({weights.path}) is {meta.mode} and cannot embed "
                f"this participant's {' or '.join(unusable)} data; use a bundle with that stream "
                "(--weights), or --skip model."
            )
        log.warning(
            "%s: no run long enough for one %d-frame window and no connectome; skipping the model stage.",
            part.label,
            meta.n_timepoints,
        )
        _remove_other_outputs(model_folder, keep=set())
        return {}
    checkpoint = None
    if config.model.scaling == "checkpoint" and inputs.windows is not None:
        if meta.scaling_median is None:
            raise OptionError(
                f"--scaling checkpoint: bundle {weights.path} stores no scaling statistics; use "
                "--scaling subject or study."
            )
        checkpoint = (meta.scaling_median, meta.scaling_iqr)
    if config.model.scaling == "study" and inputs.windows is not None:
        log.info(
            "%s: --scaling study: the participant level scales each participant by its own statistics; the "
            "group level re-embeds everyone with the study's.",
            part.label,
        )
    record = model_record(
        config, weights, windows=inputs.windows, sc=inputs.sc, labels=atlas.indices, precision=precision
    )
    features = features_path(config.execution.output_dir, part)
    if not config.execution.overwrite and _recorded(features) == record:
        log.info(
            "%s: model outputs are up to date (same inputs, settings and weights); skipping the model stage "
            "(--overwrite redoes it).",
            part.label,
        )
        return {}
    save_model_inputs(
        cache_path(config.execution.work_dir, part.subject, part.label),
        windows=inputs.windows,
        sc=inputs.sc,
        labels=atlas.indices,
        t_r=meta.tr,
    )
    # the Perceiver's compiled key stream runs on CPU where the install built it (README.md, "Two commands")
    compiled = device == "cpu" and fused_stream_available()
    log.info(
        "%s: embedding %d window(s)%s on %s (%s, %s key stream)",
        part.label,
        0 if inputs.windows is None else len(inputs.windows),
        " with the connectome" if inputs.sc is not None else "",
        device,
        precision,
        "compiled" if compiled else "PyTorch",
    )
    with freed_memory_kept():
        result = run_model(
            weights.model,
            inputs,
            scaling=config.model.scaling,
            checkpoint=checkpoint,
            batch_size=batch_size or config.model.batch_size,
            device=device,
            precision=precision,
            seed=config.workflow.seed,
        )
    scaling: dict[str, Any] = {"Scaling": result.scaling or config.model.scaling}
    if inputs.windows is not None:
        scaling["RegionsNotAvailable"] = [atlas.names[i] for i in np.flatnonzero(result.incomplete)]
    written = _write(config, part, atlas, writer, runs, weights, result.embedding, scaling, record)
    _remove_other_outputs(model_folder, keep=set(written.values()))
    return written


def model_record(
    config: Config,
    weights: Weights,
    *,
    windows: np.ndarray | None,
    sc: np.ndarray | None,
    labels: list[int],
    precision: str = "fp32",
) -> dict[str, Any]:
    """What a participant's model outputs are computed from: input content, settings and weights.

    Recorded as ``ComputedFrom`` in the feature row's sidecar; the model stage is skipped on a rerun only
    when the record it would write equals the one on disk. ``CodeSHA256`` fingerprints the code of
    :data:`MODEL_CODE` (``pipelines/fingerprint.py``), so an upgrade that changes it reruns the stage.

    Parameters
    ----------
    windows : ndarray, shape (W, R, T), or None
        Unscaled windows of all runs.
    sc : ndarray, shape (R, R), or None
        Signed connectome.
    labels : list of int
        Atlas indices, in region order.
    precision : {"fp32", "bf16"}
        The resolved ``--precision``.
    """
    from bsym_cli import __version__

    inputs = hashlib.sha256()
    for array in (windows, sc, np.asarray(labels, np.int64)):
        if array is not None:
            array = np.ascontiguousarray(array)
            inputs.update(f"{array.dtype}{array.shape}".encode())
            inputs.update(array.tobytes())
        inputs.update(b"|")
    model = config.model
    return {
        "ModelInputsSHA256": inputs.hexdigest(),
        "BundleSHA256": weights.meta.sha256,
        "HeadsSHA256": [_content_sha256(h) for h in model.heads],
        "Scaling": model.scaling if windows is None else scaling_used(model.scaling, has_study=False),
        "Seed": config.workflow.seed,
        "Precision": precision,
        "Version": __version__,
        "CodeSHA256": code_fingerprint(*MODEL_CODE, alone=(__name__,)),
        # the demo-weights warning goes into the sidecars: when it comes or goes, they are rewritten
        **({"Warning": weights.warning} if weights.warning else {}),
    }


def _content_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and bytes, in name order)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def _recorded(features: Path) -> dict[str, Any] | None:
    """The ``ComputedFrom`` record of finished model outputs, or None when there are none."""
    sidecar = sidecar_path(features)
    if not features.exists() or not sidecar.exists():
        return None
    try:
        return json.loads(sidecar.read_text()).get("ComputedFrom")
    except (OSError, json.JSONDecodeError):
        return None


def _remove_other_outputs(folder: Path, keep: set[Path]) -> None:
    """Delete the model outputs of an earlier run in ``folder`` that this run did not write (and their sidecars).

    A rerun without ``--head``, say, must not leave the old predictions beside the new features.
    """
    kept = keep | {sidecar_path(p) for p in keep}
    for path in folder.glob("*") if folder.is_dir() else []:
        if path.is_file() and not is_temporary(path) and path not in kept:
            get_logger().info("Removing %s (from an earlier run; not produced by this one).", path)
            path.unlink()


def _write(
    config: Config,
    part: ParticipantInputs,
    atlas: Atlas,
    writer: DerivativesWriter,
    runs: list[RunResult],
    weights: Weights,
    result,
    scaling: dict[str, Any],
    record: dict[str, Any],
) -> dict[str, Path]:
    meta = weights.meta
    src = _source(part)
    provenance = {
        "Atlas": atlas.label,
        "AtlasLabelsSHA256": atlas.labels_sha256,
        "Bundle": meta.name,
        "BundleSHA256": meta.sha256,
        "BundleSource": meta.source,
        **scaling,
        **({"Warning": weights.warning} if weights.warning else {}),
    }
    sources = [out for r in runs for key, out in r.written.items() if key in ("timeseries", "signed_relmat")]
    written: dict[str, Path] = {}
    for kind in ("functional", "structural", "fused"):
        emb = getattr(result, kind)
        if emb is not None:
            written[kind] = writer.write(
                "embedding",
                src,
                writer=_table_writer(_region_table(atlas, emb, "dim")),
                atlas=atlas.label,
                desc=kind,
                sources=sources,
                sidecar={**provenance, "Windows": result.n_windows},
            )
    used = [k for k in ("functional", "structural") if getattr(result, k) is not None]
    features = {"n_windows": result.n_windows, "modality": "multimodal" if len(used) == 2 else used[0]}
    features.update(feature_values(result.subject_vector()))
    row = pd.DataFrame([features])
    if config.model.heads:
        written["prediction"] = writer.write(
            "prediction",
            src,
            writer=_table_writer(_predict(config.model.heads, row)),
            sources=sources,
            sidecar=provenance,
        )
    if result.reconstruction_r2 is not None:
        table = pd.DataFrame({"index": atlas.indices, "name": atlas.names, "r2": result.reconstruction_r2})
        written["reconstruction"] = writer.write(
            "reconstruction",
            src,
            writer=_table_writer(table),
            sources=sources,
            sidecar={
                **provenance,
                "Description": "R^2 of each region's series reconstructed by the Perceiver while "
                "the region was replaced by the mask token (regions masked in 5 interleaved groups).",
            },
        )
    written["attention"] = writer.write(
        "attention",
        src,
        writer=lambda tmp: _write_h5(tmp, result, atlas, meta),
        atlas=atlas.label,
        sources=sources,
        sidecar=provenance,
    )
    written.update(_parcel_maps(part, atlas, writer, runs, result, provenance))
    # the feature row goes last: it and its sidecar's record mark the participant as finished
    written["features"] = writer.write(
        "features",
        src,
        writer=_table_writer(row),
        sources=sources,
        sidecar={
            **provenance,
            "ComputedFrom": record,
            "Description": "Mean over regions and windows of each stream's region embeddings.",
        },
    )
    return written


def _region_table(atlas: Atlas, values: np.ndarray, prefix: str) -> pd.DataFrame:
    table = pd.DataFrame(values, columns=feature_names(prefix, values.shape[1]))
    table.insert(0, "name", atlas.names)
    table.insert(0, "index", atlas.indices)
    return table


def _table_writer(table: pd.DataFrame):
    return lambda tmp: table.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.6g")


def _predict(heads: tuple[Path, ...], row: pd.DataFrame) -> pd.DataFrame:
    from pipelines.heads import load_head

    rows = []
    for path in heads:
        head = load_head(path)
        missing = [f for f in head.features if f not in row.columns]
        if missing:
            raise InputDataError(
                f"--head {path}: needs features {missing[:3]}... that this participant lacks "
                "(different modality or width); use a head fitted on the same bundle."
            )
        x = row[head.features].to_numpy(float)
        entry = {"head": Path(path).name, "target": head.target, "task": head.task, "prediction": head.predict(x)[0]}
        if head.task == "classification":
            entry.update({f"probability_{c}": float(p) for c, p in zip(head.classes, head.scores(x)[0], strict=True)})
        rows.append(entry)
    return pd.DataFrame(rows)


def _write_h5(path: Path, result, atlas: Atlas, meta) -> None:
    import h5py

    axes = {
        "spatial": "layer,head,query_region,key_region",
        "temporal": "layer,head,query_time,key_time",
        "perceiver_region": "query_region,key_region (summed over key time)",
        "perceiver_time": "query_region,key_time (summed over key regions)",
        "structural": "layer,head,query_region,key_region (signed)",
    }
    with h5py.File(path, "w") as h5:
        h5.attrs["atlas"] = atlas.label
        h5.attrs["bundle"] = meta.name
        h5.attrs["bundle_sha256"] = meta.sha256
        h5.attrs["windows"] = result.n_windows
        h5.create_dataset("region_names", data=np.array(atlas.names, dtype=h5py.string_dtype()))
        h5.create_dataset("region_index", data=np.array(atlas.indices, dtype=np.int32))
        for name, values in result.attention.items():
            data = h5.create_dataset(name, data=values.astype(np.float16), compression="gzip")
            data.attrs["axes"] = axes[name]
            data.attrs["atlas"] = atlas.label
            data.attrs["aggregation"] = "mean over windows and participants' runs"
        if result.gates is not None:
            data = h5.create_dataset("fusion_gates", data=result.gates.astype(np.float16), compression="gzip")
            data.attrs["axes"] = "region,channel"


def _parcel_maps(
    part: ParticipantInputs,
    atlas: Atlas,
    writer: DerivativesWriter,
    runs: list[RunResult],
    result,
    provenance: dict[str, Any],
) -> dict[str, Path]:
    import nibabel as nib

    from pipelines.model.maps import incoming_attention, paint_parcels

    spaces = [r.source.get("space") for r in runs if r.kind == "fmri" and r.source.get("space")]
    space = spaces[0] if spaces else next(iter(atlas.images))
    atlas_img = nib.load(atlas.image_for(space, force=True))
    maps = {}
    if "perceiver_region" in result.attention:
        maps["incomingattention"] = incoming_attention(result.attention["perceiver_region"])
    if result.gates is not None:
        maps["fusiongate"] = result.gates.mean(axis=1)
    written = {}
    for desc, values in maps.items():
        image = paint_parcels(atlas_img, atlas.indices, values)
        written[desc] = writer.write(
            "attention_map",
            _source(part),
            writer=lambda tmp, img=image: nib.save(img, tmp),
            space=space,
            atlas=atlas.label,
            desc=desc,
            sidecar=provenance,
        )
    return written
