"""The run configuration: one frozen pydantic model, built from defaults, then ``--config-file``, then flags.

Dumped as TOML next to the outputs (``sub-<label>/log/<run_uuid>/config.toml``) so every result can be
traced to its settings; ``bsym-app ... --config-file`` of a dumped file reproduces the run. The
:attr:`Config.hash` of the scientific fields goes into ``GeneratedBy`` as ``ConfigurationHash``.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bsym_cli.utils.errors import OptionError
from pipelines.defaults import DEFAULT_SEED, DEFAULT_STREAMLINES

Stage = Literal["fmri", "dmri", "model"]


def _absolute(path: Path) -> Path:
    """``~`` expanded and made absolute against the current directory, as fMRIPrep does for its config.

    Nipype nodes run in folders of their own, so a relative path that reached them would point nowhere.
    """
    return path.expanduser().absolute()


#: A path option (from a flag or the TOML file): absolute from the moment it is configured.
AbsolutePath = Annotated[Path, AfterValidator(_absolute)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExecutionConfig(_Section):
    """Where data come from and go, and which participants are selected."""

    bids_dir: AbsolutePath
    output_dir: AbsolutePath
    analysis_level: Literal["participant", "group"]
    work_dir: AbsolutePath
    participant_label: tuple[str, ...] = ()
    session_label: tuple[str, ...] = ()
    task_id: tuple[str, ...] = ()
    bids_filters: dict[str, dict[str, Any]] = Field(default_factory=dict)
    derivatives: dict[str, AbsolutePath] = Field(default_factory=dict)
    bids_database_dir: AbsolutePath | None = None
    skip_bids_validation: bool = False
    stop_on_first_crash: bool = False
    reports_only: bool = False
    boilerplate_only: bool = False
    overwrite: bool = False
    strict_config: bool = False
    verbosity: int = Field(0, ge=0, le=3)
    run_uuid: str = Field(default_factory=lambda: _new_run_uuid())

    @field_validator("participant_label", "session_label", mode="before")
    @classmethod
    def _strip_prefix(cls, value: Any, info) -> tuple[str, ...]:
        prefix = "sub-" if info.field_name == "participant_label" else "ses-"
        out = []
        for label in value or ():
            label = str(label).strip()
            label = label[len(prefix) :] if label.startswith(prefix) else label
            if not re.fullmatch(r"[a-zA-Z0-9]+", label):
                raise ValueError(f"'{label}' is not a BIDS label (letters and digits only)")
            if label not in out:
                out.append(label)
        return tuple(out)


class WorkflowConfig(_Section):
    """Scientific choices of the fMRI and dMRI workflows."""

    atlas: str = "Schaefer400Tian450"
    atlas_dataset: AbsolutePath | None = None
    force_atlas_space: bool = False
    strict_atlas: bool = False
    skip: tuple[Stage, ...] = ()
    denoise_strategy: Literal["simple", "scrubbing", "compcor", "none"] = "simple"
    dummy_scans: int | None = Field(None, ge=0)
    low_pass: float | None = Field(None, gt=0)
    high_pass: float | None = Field(None, gt=0)
    min_coverage: float = Field(0.5, ge=0, le=1)
    fd_thresh: float | None = Field(None, gt=0)
    window_stride: int | None = Field(None, ge=1)
    streamlines: int = Field(DEFAULT_STREAMLINES, ge=100)
    dwi_denoise: bool | None = None
    registration: Literal["affine", "syn", "none"] = "affine"
    save_tractogram: bool = False
    seed: int = Field(DEFAULT_SEED, ge=0)

    @model_validator(mode="after")
    def _band(self) -> WorkflowConfig:
        if self.low_pass and self.high_pass and self.high_pass >= self.low_pass:
            raise ValueError(f"high_pass ({self.high_pass} Hz) must be below low_pass ({self.low_pass} Hz)")
        if self.fd_thresh is not None and self.denoise_strategy != "scrubbing":
            raise ValueError(
                f"fd_thresh ({self.fd_thresh} mm) censors frames of the 'scrubbing' strategy only; add "
                f"--denoise-strategy scrubbing (the strategy is {self.denoise_strategy!r})"
            )
        return self


class ModelConfig(_Section):
    """The network: weights, heads, scaling, device, precision."""

    weights: AbsolutePath | None = None
    heads: tuple[AbsolutePath, ...] = ()
    scaling: Literal["subject", "checkpoint", "study"] = "subject"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    batch_size: int = Field(8, ge=1)
    targets: tuple[str, ...] = ()


class ResourcesConfig(_Section):
    """What one job may use. Unset counts follow the machine (``bsym_cli/utils/machine.py``)."""

    nprocs: int = Field(None, ge=1, validate_default=True)
    omp_nthreads: int = Field(None, ge=1, validate_default=True)
    mem_gb: float | None = Field(None, gt=0)
    resource_monitor: bool = False

    @model_validator(mode="before")
    @classmethod
    def _machine_defaults(cls, data: Any) -> Any:
        """``nprocs``: the CPUs available; ``omp_nthreads``: as fMRIPrep picks it from them."""
        from bsym_cli.utils.machine import available_cpus, default_omp_nthreads

        data = dict(data or {})
        cpus = available_cpus()
        if data.get("nprocs") is None:
            data["nprocs"] = cpus
        if data.get("omp_nthreads") is None:
            data["omp_nthreads"] = default_omp_nthreads(int(data["nprocs"]), cpus)
        return data


class NipypeConfig(_Section):
    """Nipype execution plugin (``--nipype-plugin-file``); default MultiProc/Linear from ``nprocs``."""

    plugin: str | None = None
    plugin_args: dict[str, Any] = Field(default_factory=dict)


#: Fields whose values change results; they make :attr:`Config.hash`.
SCIENTIFIC = {
    "workflow": [f for f in WorkflowConfig.model_fields if f not in {"atlas_dataset"}],
    "model": ["weights", "heads", "scaling"],
}


class Config(_Section):
    """The whole, validated, frozen configuration of one run."""

    execution: ExecutionConfig
    workflow: WorkflowConfig = WorkflowConfig()
    model: ModelConfig = ModelConfig()
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    nipype: NipypeConfig = NipypeConfig()

    @property
    def hash(self) -> str:
        """Stable 12-hex-digit hash of the scientific fields (same settings, same hash).

        A weight or head bundle counts by its name, not by where it lies: the same study run from another
        folder has the same hash (the bundles' contents are recorded by sha256 in the model sidecars).
        """
        data = self.model_dump(mode="json")
        picked = {sec: {k: data[sec][k] for k in keys} for sec, keys in SCIENTIFIC.items()}
        model = self.model
        picked["model"].update(
            weights=model.weights.name if model.weights else None, heads=[head.name for head in model.heads]
        )
        return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:12]

    def to_toml(self) -> str:
        """TOML text of the whole configuration (``None`` values omitted; TOML has no null)."""
        return tomli_w.dumps(_drop_none(self.model_dump(mode="json")))


def _new_run_uuid() -> str:
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}_{uuid.uuid4()}"


def _drop_none(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _drop_none(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [_drop_none(v) for v in data]
    return data


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML configuration file into nested sections; refuse unknown syntax with the file named."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise OptionError(f"--config-file {path}: no such file.") from None
    except tomllib.TOMLDecodeError as exc:
        raise OptionError(f"--config-file {path}: not valid TOML ({exc}).") from None


def merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Merge nested section dicts; later layers win field by field."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "bids_filters":
                out[key] = merge(out[key], value)
            else:
                out[key] = value
    return out


def build_config(*layers: dict[str, Any]) -> Config:
    """Validate the merged layers once; a bad value exits 64 naming the field and the value."""
    try:
        return Config.model_validate(merge(*layers))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            value = err.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            problems.append(f"{field}: {err['msg']}{shown}")
        raise OptionError("invalid configuration: " + "; ".join(problems)) from None


def parse_mem(value: str | float | None) -> float | None:
    """``--mem`` in GB. A bare number is MB, as in fMRIPrep and XCP-D and as schedulers give it (``16000``);
    units are accepted (``16G``, ``16GB``, ``16000MB``, ``1.5T``; decimal units)."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgGtT]?)[bB]?\s*", str(value))
    if not match:
        raise OptionError(f"--mem {value!r}: use a number of MB (16000), or a size such as 16GB or 16000MB.")
    number, unit = float(match.group(1)), match.group(2).upper() or "M"
    return number * {"K": 1e-6, "M": 1e-3, "G": 1.0, "T": 1e3}[unit]


def dump_config(config: Config, *folders: Path) -> list[Path]:
    """Write ``config.toml`` into each folder (atomically); return the paths."""
    from pipelines.atomic import write_text

    text = config.to_toml()
    return [write_text(Path(folder) / "config.toml", text) for folder in folders]
