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
from bsym_cli.bids.discovery import ParticipantInputs
from bsym_cli.cli.config import Config
from bsym_cli.levels.participant import ModelContract, RunResult
from bsym_cli.utils.errors import InputDataError, MissingInputError, OptionError
from bsym_cli.utils.logs import get_logger
from pipelines.atomic import atomic_path, is_temporary

DEFAULT_BUNDLE = "bsym-demo-sim"


@dataclass
class Weights:
    """A loaded bundle: the model, its metadata, where it came from."""

    model: Any
    meta: Any
    path: Path


def default_bundle_path() -> Path | None:
    """``$BSYM_WEIGHTS`` (the container's baked bundle), else ``brainsymphony/weights/<DEFAULT_BUNDLE>``."""
    if os.environ.get("BSYM_WEIGHTS") and Path(os.environ["BSYM_WEIGHTS"]).exists():
        return Path(os.environ["BSYM_WEIGHTS"])
    root = Path(str(resources.files("brainsymphony"))) / "weights"
    for candidate in (root / DEFAULT_BUNDLE, root / f"{DEFAULT_BUNDLE}.tar"):
        if candidate.exists():
            return candidate
    return None


def weights_path(config: Config) -> Path:
    """``--weights`` or the packaged default; exit 66 with the fix if neither exists."""
    path = config.model.weights or default_bundle_path()
    if path is None:
        raise MissingInputError("No weight bundle: the package ships none and --weights was not given. Pass "
                                "--weights BUNDLE (e.g. from `bsym weights import-official` or `bsym pretrain`).")
    if not Path(path).exists():
        raise MissingInputError(f"--weights {path}: no such file or folder.")
    return Path(path)


def read_contract(config: Config) -> ModelContract:
    """TR and T the weights expect (read from ``bundle.json`` only; published values if no bundle)."""
    if "model" in config.workflow.skip:
        return ModelContract()
    from brainsymphony.bundle import read_bundle_metadata

    meta = read_bundle_metadata(weights_path(config))
    return ModelContract(t_r=meta.tr or ModelContract.t_r, n_timepoints=meta.n_timepoints)


def load_weights(config: Config, atlas: Atlas) -> Weights:
    """Load the bundle and check its data contract against the atlas (region count, labels)."""
    from brainsymphony import load_bundle

    path = weights_path(config)
    model, meta = load_bundle(path)
    check_contract(meta, atlas, strict=config.workflow.strict_atlas, path=path)
    return Weights(model=model, meta=meta, path=path)


def check_contract(meta, atlas: Atlas, *, strict: bool, path: Path) -> None:
    """Refuse a different region count; warn (or refuse with ``strict``) on different labels."""
    if meta.n_regions != len(atlas.indices):
        raise OptionError(f"--weights {path}: the bundle expects {meta.n_regions} regions ({meta.atlas}) but atlas "
                          f"'{atlas.label}' has {len(atlas.indices)}; use the bundle's atlas (--atlas {meta.atlas}) "
                          "or weights trained on this atlas.")
    if meta.labels_sha256 and meta.labels_sha256 != atlas.labels_sha256:
        first = _first_difference(getattr(meta, "labels", None), atlas)
        message = (f"--weights {path}: the atlas labels differ from those the weights were trained on "
                   f"({meta.atlas} vs {atlas.label}{first}); region order may not match.")
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


def read_relmat(path: str | Path) -> np.ndarray:
    """An XCP-D style relmat TSV (``Node`` column + one column per parcel) as an (R, R) array (n/a -> NaN)."""
    table = pd.read_csv(path, sep="\t", na_values="n/a", index_col=0)
    return table.to_numpy(dtype=np.float64)


def features_path(config: Config, part: ParticipantInputs) -> Path:
    """Where this participant's feature row goes (its existence marks a finished model stage)."""
    return output_path(config.execution.output_dir, "features", _source(part))


def _source(part: ParticipantInputs) -> dict[str, str]:
    return {"sub": part.subject, **({"ses": part.session} if part.session else {})}


def run_model_stage(config: Config, part: ParticipantInputs, atlas: Atlas, writer: DerivativesWriter,
                    runs: list[RunResult], weights: Weights, device: str) -> dict[str, Path]:
    """Scale, embed and write one participant's model outputs; return the written paths."""
    from pipelines.fmri.model_input import load_model_input
    from pipelines.model.embed import embed_participant
    from pipelines.model.scaling import robust_statistics, scale_windows

    log = get_logger()
    meta, cfg = weights.meta, weights.model.config
    fmri_runs = [r for r in runs if r.kind == "fmri"]
    dwi_runs = [r for r in runs if r.kind == "dmri"]
    windows = None
    if fmri_runs and cfg.has_functional:
        arrays = [load_model_input(r.files["windows"]) for r in fmri_runs]
        for run, arr in zip(fmri_runs, arrays, strict=True):
            if arr["windows"].shape[0] == 0:
                log.warning("%s: run %s has %d frames at TR %.2f s, fewer than one %d-frame window; the model "
                            "skips it (its parcellation outputs are written).", part.label, run.run_id,
                            arr["n_frames"], arr["t_r"], meta.n_timepoints)
        kept = [a["windows"] for a in arrays if a["windows"].shape[0]]
        if kept:
            windows = np.concatenate(kept)
    elif fmri_runs:
        log.warning("%s: bundle %s has no functional stream; BOLD runs are not embedded.", part.label, meta.name)
    sc = None
    if dwi_runs and cfg.has_structural:
        sc = np.nan_to_num(read_relmat(dwi_runs[0].files["signed_relmat"]))
        if len(dwi_runs) > 1:
            log.info("%s: %d DWI series; the model uses the first.", part.label, len(dwi_runs))
    elif dwi_runs:
        log.warning("%s: bundle %s has no structural stream; the connectome is not embedded.", part.label, meta.name)
    if windows is not None and not np.isfinite(windows).any():
        sources = ", ".join(str(r.written["timeseries"]) for r in fmri_runs)
        raise InputDataError(f"{part.label}: every region is n/a in every window ({sources}); the parcellation found "
                             "no usable signal. Check the BOLD series and brain mask, or lower --min-coverage.")
    model_folder = features_path(config, part).parent
    if windows is None and sc is None:
        unusable = [kind for kind, runs_of, has in (("BOLD", fmri_runs, cfg.has_functional),
                                                      ("DWI", dwi_runs, cfg.has_structural)) if runs_of and not has]
        if unusable:
            raise InputDataError(f"{part.label}: bundle {meta.name} ({weights.path}) is {meta.mode} and cannot embed "
                                 f"this participant's {' or '.join(unusable)} data; use a bundle with that stream "
                                 "(--weights), or --skip model.")
        log.warning("%s: no run long enough for one %d-frame window and no connectome; skipping the model "
                    "stage.", part.label, meta.n_timepoints)
        _remove_other_outputs(model_folder, keep=set())
        return {}
    record = model_record(config, weights, windows=windows, sc=sc, labels=atlas.indices)
    if not config.execution.overwrite and _recorded(features_path(config, part)) == record:
        log.info("%s: model outputs are up to date (same inputs, settings and weights); skipping the model stage "
                 "(--overwrite redoes it).", part.label)
        return {}
    scaling: dict[str, Any] = {"Scaling": config.model.scaling}
    if windows is not None:
        if config.model.scaling == "checkpoint":
            if meta.scaling_median is None:
                raise OptionError(f"--scaling checkpoint: bundle {weights.path} stores no scaling statistics; use "
                                  "--scaling subject or study.")
            median, iqr = meta.scaling_median, meta.scaling_iqr
        else:
            median, iqr = robust_statistics(windows)
        scaled, available = scale_windows(windows, median, iqr)
        scaling["RegionsNotAvailable"] = [atlas.names[i] for i in np.flatnonzero(~available.all(axis=0))]
    else:
        scaled = None
    cache = Path(config.execution.work_dir) / f"sub-{part.subject}" / "model" / f"{part.label}_model_input.npz"
    save_model_inputs(cache, windows=windows, sc=sc, labels=atlas.indices, t_r=meta.tr)
    log.info("%s: embedding %d window(s)%s on %s", part.label, 0 if scaled is None else len(scaled),
             " with the connectome" if sc is not None else "", device)
    result = embed_participant(weights.model, scaled, sc, batch_size=config.model.batch_size, device=device,
                               seed=config.workflow.seed)
    written = _write(config, part, atlas, writer, runs, weights, result, scaling, record)
    _remove_other_outputs(model_folder, keep=set(written.values()))
    return written


def model_record(config: Config, weights: Weights, *, windows: np.ndarray | None, sc: np.ndarray | None,
                 labels: list[int]) -> dict[str, Any]:
    """What a participant's model outputs are computed from: input content, settings and weights.

    Recorded as ``ComputedFrom`` in the feature row's sidecar; the model stage is skipped on a rerun only
    when the record it would write equals the one on disk.

    Parameters
    ----------
    windows : ndarray, shape (W, R, T), or None
        Unscaled windows of all runs.
    sc : ndarray, shape (R, R), or None
        Signed connectome.
    labels : list of int
        Atlas indices, in region order.
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
    return {"ModelInputsSHA256": inputs.hexdigest(), "BundleSHA256": weights.meta.sha256,
            "HeadsSHA256": [_content_sha256(h) for h in model.heads], "Scaling": model.scaling,
            "Seed": config.workflow.seed, "Version": __version__}


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


def save_model_inputs(path: Path, *, windows: np.ndarray | None, sc: np.ndarray | None, labels: list[int],
                      t_r: float | None) -> Path:
    """Cache a participant's model inputs for study scaling, pretraining and fine-tuning.

    The ``.npz`` holds ``windows`` (W, R, T) float32, unscaled, NaN rows for n/a parcels (W may be 0),
    ``sc`` (R, R) float32 signed connectome (empty (0, 0) when absent), ``labels`` (R,) atlas indices and
    ``t_r`` (s). ``bsym pretrain``/``bsym finetune`` read these files from a work directory.
    """
    n_regions = len(labels)
    arrays = {
        "windows": np.zeros((0, n_regions, 0), np.float32) if windows is None else windows.astype(np.float32),
        "sc": np.zeros((0, 0), np.float32) if sc is None else sc.astype(np.float32),
        "labels": np.asarray(labels, np.int32), "t_r": np.float64(t_r or np.nan),
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def _write(config: Config, part: ParticipantInputs, atlas: Atlas, writer: DerivativesWriter, runs: list[RunResult],
           weights: Weights, result, scaling: dict[str, Any], record: dict[str, Any]) -> dict[str, Path]:
    meta = weights.meta
    src = _source(part)
    provenance = {"Atlas": atlas.label, "AtlasLabelsSHA256": atlas.labels_sha256, "Bundle": meta.name,
                  "BundleSHA256": meta.sha256, "BundleSource": meta.source, **scaling}
    sources = [out for r in runs for key, out in r.written.items() if key in ("timeseries", "signed_relmat")]
    written: dict[str, Path] = {}
    for kind in ("functional", "structural", "fused"):
        emb = getattr(result, kind)
        if emb is not None:
            written[kind] = writer.write("embedding", src, writer=_table_writer(_region_table(atlas, emb, "dim")),
                                         atlas=atlas.label, desc=kind, sources=sources,
                                         sidecar={**provenance, "Windows": result.n_windows})
    used = [k for k in ("functional", "structural") if getattr(result, k) is not None]
    features = {"n_windows": result.n_windows, "modality": "multimodal" if len(used) == 2 else used[0]}
    for kind, vector in result.subject_vector().items():
        features.update({f"{kind}_{i:03d}": float(v) for i, v in enumerate(vector)})
    row = pd.DataFrame([features])
    if config.model.heads:
        written["prediction"] = writer.write("prediction", src, writer=_table_writer(_predict(config, row)),
                                             sources=sources, sidecar=provenance)
    if result.reconstruction_r2 is not None:
        table = pd.DataFrame({"index": atlas.indices, "name": atlas.names, "r2": result.reconstruction_r2})
        written["reconstruction"] = writer.write(
            "reconstruction", src, writer=_table_writer(table), sources=sources,
            sidecar={**provenance, "Description": "R^2 of each region's series reconstructed by the Perceiver while "
                     "the region was replaced by the mask token (regions masked in 5 interleaved groups)."})
    written["attention"] = writer.write("attention", src, writer=lambda tmp: _write_h5(tmp, result, atlas, meta),
                                        atlas=atlas.label, sources=sources, sidecar=provenance)
    written.update(_parcel_maps(config, part, atlas, writer, runs, result, provenance))
    work = Path(config.execution.work_dir) / f"sub-{part.subject}" / "model"
    work.mkdir(parents=True, exist_ok=True)
    with atomic_path(work / f"{part.label}_window_embeddings.npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **result.window_embeddings)
    # the feature row goes last: it and its sidecar's record mark the participant as finished
    written["features"] = writer.write("features", src, writer=_table_writer(row), sources=sources,
                                       sidecar={**provenance, "ComputedFrom": record,
                                                "Description": "Mean over regions and windows of each "
                                                "stream's region embeddings."})
    return written


def _region_table(atlas: Atlas, values: np.ndarray, prefix: str) -> pd.DataFrame:
    table = pd.DataFrame(values, columns=[f"{prefix}_{i:03d}" for i in range(values.shape[1])])
    table.insert(0, "name", atlas.names)
    table.insert(0, "index", atlas.indices)
    return table


def _table_writer(table: pd.DataFrame):
    return lambda tmp: table.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.6g")


def _predict(config: Config, row: pd.DataFrame) -> pd.DataFrame:
    from pipelines.heads import load_head

    rows = []
    for path in config.model.heads:
        head = load_head(path)
        missing = [f for f in head.features if f not in row.columns]
        if missing:
            raise InputDataError(f"--head {path}: needs features {missing[:3]}... that this participant lacks "
                                 "(different modality or width); use a head fitted on the same bundle.")
        x = row[head.features].to_numpy(float)
        entry = {"head": Path(path).name, "target": head.target, "task": head.task,
                 "prediction": head.predict(x)[0]}
        if head.task == "classification":
            entry.update({f"probability_{c}": float(p) for c, p in zip(head.classes, head.scores(x)[0], strict=True)})
        rows.append(entry)
    return pd.DataFrame(rows)


def _write_h5(path: Path, result, atlas: Atlas, meta) -> None:
    import h5py

    axes = {"spatial": "layer,head,query_region,key_region", "temporal": "layer,head,query_time,key_time",
            "perceiver_region": "query_region,key_region (summed over key time)",
            "perceiver_time": "query_region,key_time (summed over key regions)",
            "structural": "layer,head,query_region,key_region (signed)"}
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


def incoming_attention(region_map: np.ndarray) -> np.ndarray:
    """Incoming attention per parcel: column sums of the directed (query x key) map, normalised to sum 1."""
    incoming = np.asarray(region_map, dtype=np.float64).sum(axis=0)
    return incoming / incoming.sum()


def paint_parcels(atlas_img, indices: list[int], values: np.ndarray):
    """A float32 image on the atlas grid with each parcel's voxels set to its value (0 outside parcels)."""
    import nibabel as nib

    labels = np.asarray(atlas_img.dataobj).astype(np.int64)
    lookup = np.zeros(max(int(labels.max()), max(indices)) + 1, np.float32)
    lookup[np.asarray(indices)] = values
    return nib.Nifti1Image(lookup[np.clip(labels, 0, None)], atlas_img.affine)


def _parcel_maps(config: Config, part: ParticipantInputs, atlas: Atlas, writer: DerivativesWriter,
                 runs: list[RunResult], result, provenance: dict[str, Any]) -> dict[str, Path]:
    import nibabel as nib

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
        written[desc] = writer.write("attention_map", _source(part), writer=lambda tmp, img=image: nib.save(img, tmp),
                                     space=space, atlas=atlas.label, desc=desc, sidecar=provenance)
    return written
