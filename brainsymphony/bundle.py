"""Weight bundles: ``model.safetensors`` + ``bundle.json``, as a folder or a ``.tar`` (docs/model.md, "Weight bundles").

``bundle.json`` carries the model config, the data contract (atlas label and labels sha256, R, T, TR,
optional scaling statistics, SC transform), provenance, and the sha256 of the weights file, which
:func:`load_bundle` verifies before loading anything.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from brainsymphony.config import BrainSymphonyConfig
from brainsymphony.errors import CheckpointError, ConfigError
from brainsymphony.model import BrainSymphony

#: The transform of streamline counts into the model's signed connectome (see docs/model.md).
SIGNED_TRANSFORM = "log10_count_per_volume"

WEIGHTS_NAME = "model.safetensors"
MANIFEST_NAME = "bundle.json"
FORMAT = "bsym-bundle"
FORMAT_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class BundleMetadata:
    """What a bundle promises about its weights; the app checks its inputs against it.

    Attributes
    ----------
    name : str
        Bundle name.
    mode : str
        ``functional``, ``structural`` or ``multimodal``.
    atlas : str
        Atlas label the weights were trained on (e.g. ``Schaefer400Tian450``).
    labels_sha256 : str or None
        sha256 of the atlas labels TSV that fixes region names and order.
    n_regions, n_timepoints : int
        R and T of the inputs.
    tr : float or None
        Repetition time, in seconds, the series must be resampled to.
    scaling_median, scaling_iqr : ndarray, shape (R,), or None
        Per-region robust scaling statistics, both or neither.
    sc_transform : str
        Name of the structural connectome transform (docs/model.md, "Signed structural connectome").
    sha256 : str
        sha256 of ``model.safetensors``.
    licence, source, training : str
        Licence of the weights, where they come from, what data trained them.
    notes : tuple of str
        Free remarks (e.g. that the fusion gate is neutral).
    created : str
        ISO 8601 UTC time the bundle was written.
    config : BrainSymphonyConfig
    """

    name: str
    mode: str
    atlas: str
    labels_sha256: str | None
    n_regions: int
    n_timepoints: int
    tr: float | None
    scaling_median: np.ndarray | None
    scaling_iqr: np.ndarray | None
    sc_transform: str
    sha256: str
    licence: str
    source: str
    training: str
    notes: tuple[str, ...]
    created: str
    config: BrainSymphonyConfig

    def to_manifest(self) -> dict[str, Any]:
        """The ``bundle.json`` dictionary."""
        scaling = None
        if self.scaling_median is not None and self.scaling_iqr is not None:
            scaling = {"median": self.scaling_median.tolist(), "iqr": self.scaling_iqr.tolist()}
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "mode": self.mode,
            "config": self.config.to_dict(),
            "data_contract": {
                "atlas": self.atlas,
                "labels_sha256": self.labels_sha256,
                "n_regions": self.n_regions,
                "n_timepoints": self.n_timepoints,
                "tr": self.tr,
                "scaling": scaling,
                "sc_transform": self.sc_transform,
            },
            "provenance": {
                "licence": self.licence,
                "source": self.source,
                "training": self.training,
                "notes": list(self.notes),
                "created": self.created,
            },
            "weights": {"file": WEIGHTS_NAME, "sha256": self.sha256},
        }

    def describe(self) -> str:
        """Human-readable summary (``bsym weights info``)."""
        contract = self.to_manifest()["data_contract"]
        lines = [
            f"name:          {self.name}",
            f"mode:          {self.mode}",
            f"atlas:         {self.atlas} (labels sha256 {self.labels_sha256 or 'not recorded'})",
            f"inputs:        R={self.n_regions} regions, T={self.n_timepoints} frames, TR={self.tr} s",
            f"scaling:       {'per-region median/IQR stored' if contract['scaling'] else 'none (per subject/study)'}",
            f"sc transform:  {self.sc_transform}",
            f"weights:       {WEIGHTS_NAME} sha256 {self.sha256}",
            f"licence:       {self.licence}",
            f"source:        {self.source}",
            f"training:      {self.training}",
            f"created:       {self.created}",
        ]
        lines += [f"note:          {note}" for note in self.notes]
        return "\n".join(lines)


def save_bundle(
    model: BrainSymphony,
    path: str | Path,
    *,
    name: str,
    atlas: str,
    labels_sha256: str | None = None,
    tr: float | None = None,
    scaling_median: np.ndarray | None = None,
    scaling_iqr: np.ndarray | None = None,
    sc_transform: str = SIGNED_TRANSFORM,
    licence: str = "unspecified",
    source: str = "unspecified",
    training: str = "unspecified",
    notes: tuple[str, ...] | list[str] = (),
) -> BundleMetadata:
    """Write a bundle folder, or a ``.tar`` of it when ``path`` ends in ``.tar``.

    Parameters
    ----------
    model : BrainSymphony
    path : str or Path
        Target folder (created; its two bundle files are replaced) or ``*.tar`` file.
    name, atlas, labels_sha256, tr, scaling_median, scaling_iqr, sc_transform, licence, source, training,
    notes
        See :class:`BundleMetadata`. ``scaling_median`` and ``scaling_iqr`` have shape (R,).

    Returns
    -------
    BundleMetadata
        What was written.
    """
    config = model.config
    median, iqr = _check_scaling(scaling_median, scaling_iqr, config.n_regions)
    state = {key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
    weights = save_safetensors(state)
    metadata = BundleMetadata(
        name=name,
        mode=config.mode,
        atlas=atlas,
        labels_sha256=labels_sha256,
        n_regions=config.n_regions,
        n_timepoints=config.n_timepoints,
        tr=None if tr is None else float(tr),
        scaling_median=median,
        scaling_iqr=iqr,
        sc_transform=sc_transform,
        sha256=hashlib.sha256(weights).hexdigest(),
        licence=licence,
        source=source,
        training=training,
        notes=tuple(notes),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        config=config,
    )
    manifest = json.dumps(metadata.to_manifest(), indent=2).encode()
    target = Path(path)
    if target.suffix == ".tar":
        target.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for member, payload in ((MANIFEST_NAME, manifest), (WEIGHTS_NAME, weights)):
                info = tarfile.TarInfo(f"{target.stem}/{member}")
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
        _write_atomically(target, buffer.getvalue())
    else:
        target.mkdir(parents=True, exist_ok=True)
        _write_atomically(target / WEIGHTS_NAME, weights)
        _write_atomically(target / MANIFEST_NAME, manifest)
    return metadata


def read_bundle_metadata(path: str | Path) -> BundleMetadata:
    """Read and verify a bundle's ``bundle.json`` (and the weights' sha256) without building the model."""
    manifest, weights = _read_members(Path(path))
    return _metadata(Path(path), manifest, weights)


def load_bundle(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[BrainSymphony, BundleMetadata]:
    """Load a bundle folder or ``.tar``; the weights' sha256 is verified before anything is built.

    Parameters
    ----------
    path : str or Path
    device : str or torch.device
        Where to put the model.

    Returns
    -------
    model : BrainSymphony
        In eval mode.
    metadata : BundleMetadata

    Raises
    ------
    CheckpointError
        Missing member, unreadable manifest, sha256 mismatch, or weights that do not fit the config.
    """
    path = Path(path)
    manifest, weights = _read_members(path)
    metadata = _metadata(path, manifest, weights)
    try:
        state = load_safetensors(weights)
    except Exception as exc:
        raise CheckpointError(f"{path}: {WEIGHTS_NAME} is not a readable safetensors file ({exc})") from exc
    model = BrainSymphony(metadata.config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path}: weights do not fit the bundle's config (missing {missing}, unexpected {unexpected},"
            f" wrong shape {wrong}); the bundle was edited or written by an incompatible version"
        )
    model.load_state_dict(state)
    return model.to(device).eval(), metadata


def _read_members(path: Path) -> tuple[bytes, bytes]:
    """Bytes of bundle.json and model.safetensors from a folder or a tar."""
    if path.is_dir():
        members = {}
        for member in (MANIFEST_NAME, WEIGHTS_NAME):
            if not (path / member).is_file():
                raise CheckpointError(f"{path}: not a weight bundle, {member} is missing")
            members[member] = (path / member).read_bytes()
        return members[MANIFEST_NAME], members[WEIGHTS_NAME]
    if path.is_file() and tarfile.is_tarfile(path):
        found: dict[str, bytes] = {}
        with tarfile.open(path) as archive:
            for info in archive.getmembers():
                base = Path(info.name).name
                if info.isfile() and base in (MANIFEST_NAME, WEIGHTS_NAME):
                    if base in found:
                        raise CheckpointError(f"{path}: the archive holds more than one {base}")
                    stream = archive.extractfile(info)
                    if stream is None:
                        raise CheckpointError(f"{path}: cannot read {info.name} from the archive")
                    found[base] = stream.read()
        for member in (MANIFEST_NAME, WEIGHTS_NAME):
            if member not in found:
                raise CheckpointError(f"{path}: not a weight bundle, the archive has no {member}")
        return found[MANIFEST_NAME], found[WEIGHTS_NAME]
    raise CheckpointError(f"{path}: no such bundle folder or .tar; pass --weights a bundle written by bsym")


def _metadata(path: Path, manifest_bytes: bytes, weights: bytes) -> BundleMetadata:
    """Parse bundle.json and check the weights' sha256."""
    try:
        manifest = json.loads(manifest_bytes)
        if manifest.get("format") != FORMAT:
            raise KeyError("format")
        contract, provenance = manifest["data_contract"], manifest["provenance"]
        config = BrainSymphonyConfig.from_dict(manifest["config"])
        recorded = manifest["weights"]["sha256"]
    except (ValueError, KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: {MANIFEST_NAME} is not a valid bundle manifest ({exc!r})") from exc
    actual = hashlib.sha256(weights).hexdigest()
    if actual != recorded:
        raise CheckpointError(
            f"{path}: {WEIGHTS_NAME} has sha256 {actual} but {MANIFEST_NAME} records {recorded}; the weights"
            " were modified or the copy is damaged. Copy the bundle again from its source."
        )
    if contract["n_regions"] != config.n_regions or contract["n_timepoints"] != config.n_timepoints:
        raise CheckpointError(f"{path}: data contract R/T disagree with the model config in {MANIFEST_NAME}")
    scaling = contract.get("scaling")
    median = iqr = None
    if scaling is not None:
        median, iqr = _check_scaling(np.asarray(scaling["median"]), np.asarray(scaling["iqr"]), config.n_regions)
    return BundleMetadata(
        name=manifest["name"],
        mode=manifest["mode"],
        atlas=contract["atlas"],
        labels_sha256=contract.get("labels_sha256"),
        n_regions=contract["n_regions"],
        n_timepoints=contract["n_timepoints"],
        tr=contract.get("tr"),
        scaling_median=median,
        scaling_iqr=iqr,
        sc_transform=contract["sc_transform"],
        sha256=actual,
        licence=provenance.get("licence", "unspecified"),
        source=provenance.get("source", "unspecified"),
        training=provenance.get("training", "unspecified"),
        notes=tuple(provenance.get("notes", ())),
        created=provenance.get("created", ""),
        config=config,
    )


def _check_scaling(
    median: np.ndarray | None, iqr: np.ndarray | None, regions: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    if median is None and iqr is None:
        return None, None
    if median is None or iqr is None:
        raise CheckpointError("scaling statistics need both median and IQR, or neither")
    median, iqr = np.asarray(median, dtype=np.float64), np.asarray(iqr, dtype=np.float64)
    if median.shape != (regions,) or iqr.shape != (regions,):
        raise CheckpointError(
            f"scaling statistics have shapes {median.shape} and {iqr.shape}; expected ({regions},) each"
        )
    if not (np.isfinite(median).all() and np.isfinite(iqr).all() and (iqr > 0).all()):
        raise CheckpointError("scaling statistics must be finite and every IQR > 0")
    return median, iqr


def _write_atomically(target: Path, payload: bytes) -> None:
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    partial.write_bytes(payload)
    os.replace(partial, target)


__all__ = ["BundleMetadata", "load_bundle", "read_bundle_metadata", "save_bundle"]
