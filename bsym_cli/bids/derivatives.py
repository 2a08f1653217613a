"""The one place that names and writes outputs (docs/architecture.md, "Derivatives layout").

Names follow XCP-D (BIDS 1.11 ``atlas-``), built from the source file's entities; every file is written
atomically with a JSON sidecar that records ``Sources`` as BIDS URIs. The dataset's shared root files
(``dataset_description.json``, ``.bidsignore``, ``logs/CITATION.md``) are written under a lock.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from bsym_cli import CODE_URL, __version__
from bsym_cli.utils.logs import get_logger
from pipelines.atomic import atomic_path, locked, remove_stale_temporaries, write_json, write_text

#: BIDS entities that identify a source acquisition, in BIDS order (long pybids name -> key).
SOURCE_ENTITIES = {
    "subject": "sub",
    "session": "ses",
    "task": "task",
    "acquisition": "acq",
    "ceagent": "ce",
    "reconstruction": "rec",
    "direction": "dir",
    "run": "run",
    "echo": "echo",
}
#: Output entities, in the order they appear in a name after the source ones.
OUTPUT_ENTITIES = ("space", "atlas", "stat", "desc")


@dataclass(frozen=True)
class Output:
    """How one kind of output is named: folder, fixed entities, suffix, extension."""

    datatype: str
    suffix: str
    extension: str
    entities: tuple[tuple[str, str], ...] = ()
    source: tuple[str, ...] = tuple(SOURCE_ENTITIES.values())


#: Every output of bsym-app. ``space``/``atlas``/``desc`` given at write time fill the blanks.
OUTPUTS: dict[str, Output] = {
    "timeseries": Output("func", "timeseries", ".tsv", (("stat", "mean"),)),
    "relmat": Output("func", "relmat", ".tsv", (("stat", "pearsoncorrelation"),)),
    "coverage": Output("func", "bold", ".tsv", (("stat", "coverage"),)),
    "atlas_dwi": Output("dwi", "dseg", ".nii.gz", (("space", "dwi"),)),
    "count_relmat": Output("dwi", "relmat", ".tsv", (("stat", "streamlinecount"),)),
    "signed_relmat": Output("dwi", "relmat", ".tsv", (("stat", "signedsc"),)),
    "registration_figure": Output("figures", "dwi", ".svg", (("desc", "registration"),)),
    "tractogram": Output("dwi", "tractography", ".trx"),
    "embedding": Output("model", "embedding", ".tsv", source=("sub", "ses")),
    "features": Output("model", "features", ".tsv", (("desc", "bsym"),), source=("sub", "ses")),
    "prediction": Output("model", "prediction", ".tsv", (("desc", "bsym"),), source=("sub", "ses")),
    "attention": Output("model", "attention", ".h5", (("desc", "bsym"),), source=("sub", "ses")),
    "attention_map": Output("model", "stat", ".nii.gz", source=("sub", "ses")),
    "reconstruction": Output("model", "reconstruction", ".tsv", (("desc", "bsym"),), source=("sub", "ses")),
}

BIDSIGNORE = """\
*_timeseries.tsv
*_timeseries.json
*_relmat.tsv
*_relmat.json
*_stat-*
*_embedding.*
*_features.*
*_prediction.*
*_attention.*
*_reconstruction.*
*_tractography.*
*/model/
*/figures/
*/log/
logs/
group/
"""

CITATION = """\
# Citing bsym-app outputs

Results were computed with bsym-app {version} ({url}), which runs the BrainSymphony foundation model
(Khajehnejad, Habibollahi, Stoliker, Razi; arXiv:2506.18314) on fMRIPrep and QSIPrep derivatives,
using Nipype (Gorgolewski et al., 2011), nilearn (Abraham et al., 2014), DIPY (Garyfallidis et al.,
2014), pybids (Yarkoni et al., 2019) and PyTorch (Paszke et al., 2019).
See each participant's HTML report for the methods of that run.
"""


def source_entities(entities: Mapping[str, Any]) -> dict[str, str]:
    """Keep the source-identifying entities, as short keys, from pybids-style or short-key entities."""
    out = {}
    for long, short in SOURCE_ENTITIES.items():
        value = entities.get(long, entities.get(short))
        if value not in (None, ""):
            out[short] = str(value)
    return out


def output_path(
    out_dir: str | Path, kind: str, source: Mapping[str, Any], *, extension: str | None = None, **entities: str | None
) -> Path:
    """Where output ``kind`` (a key of :data:`OUTPUTS`) of ``source`` goes.

    Parameters
    ----------
    out_dir : str or Path
        The derivative dataset (OUTPUT_DIR).
    kind : str
        A key of :data:`OUTPUTS`.
    source : mapping
        Entities of the source file (pybids long names or short keys); ``sub`` is required.
    extension : str, optional
        Replaces the kind's extension (e.g. ``.png`` for a figure).
    **entities
        ``space``, ``atlas``, ``stat`` or ``desc`` values for the blanks of ``kind``.

    Examples
    --------
    >>> output_path("/out", "timeseries", {"sub": "01", "task": "rest"}, space="MNI152NLin6Asym", atlas="A")
    PosixPath('/out/sub-01/func/sub-01_task-rest_space-MNI152NLin6Asym_atlas-A_stat-mean_timeseries.tsv')
    """
    spec = OUTPUTS[kind]
    src = source_entities(source)
    if "sub" not in src:
        raise ValueError(f"output {kind}: the source entities {dict(source)} have no subject")
    unknown = set(entities) - set(OUTPUT_ENTITIES)
    if unknown:
        raise ValueError(f"output {kind}: unknown entities {sorted(unknown)}")
    values = {**dict(spec.entities), **{k: v for k, v in entities.items() if v}}
    parts = [f"{key}-{src[key]}" for key in spec.source if key in src]
    parts += [f"{key}-{values[key]}" for key in OUTPUT_ENTITIES if values.get(key)]
    folder = Path(out_dir) / f"sub-{src['sub']}"
    if "ses" in src:
        folder /= f"ses-{src['ses']}"
    return folder / spec.datatype / ("_".join(parts) + f"_{spec.suffix}{extension or spec.extension}")


def bids_uri(path: str | Path, datasets: Mapping[str, Path]) -> str:
    """``bids:<name>:<relative path>`` for a file inside one of ``datasets`` (else its absolute path)."""
    path = Path(path).absolute()
    for name, root in sorted(datasets.items(), key=lambda kv: -len(str(kv[1]))):
        root = Path(root).absolute()
        if root in path.parents:
            return f"bids:{name}:{path.relative_to(root).as_posix()}"
    return str(path)


class DerivativesWriter:
    """Writes the outputs of one run into OUTPUT_DIR.

    Parameters
    ----------
    out_dir : Path
        The derivative dataset.
    datasets : mapping of str to Path
        Input datasets by name (``raw``, ``fmriprep``, ``qsiprep``), for ``Sources`` URIs and ``DatasetLinks``.
    """

    def __init__(self, out_dir: str | Path, datasets: Mapping[str, Path]) -> None:
        self.out_dir = Path(out_dir)
        self.datasets = {k: Path(v) for k, v in datasets.items()}

    def write(
        self,
        kind: str,
        source: Mapping[str, Any],
        *,
        src_file: str | Path | None = None,
        writer: Any = None,
        sidecar: Mapping[str, Any] | None = None,
        sources: list[str | Path] = (),
        extension: str | None = None,
        **entities: str | None,
    ) -> Path:
        """Write one output: copy ``src_file`` or call ``writer(tmp_path)``; add a JSON sidecar.

        The sidecar (for non-JSON outputs) gets ``Sources`` (BIDS URIs of ``sources``) merged into
        ``sidecar``. Returns the output path.
        """
        path = output_path(self.out_dir, kind, source, extension=extension, **entities)
        with atomic_path(path) as tmp:
            if src_file is not None:
                shutil.copyfile(src_file, tmp)
            elif writer is not None:
                writer(tmp)
            else:
                raise ValueError(f"output {kind}: give src_file or writer")
        if sidecar is not None or sources:
            meta = dict(sidecar or {})
            if sources:
                meta["Sources"] = [bids_uri(s, self.datasets) for s in sources]
            write_json(sidecar_path(path), meta)
        return path

    def write_dataset_files(
        self, *, config_hash: str, upstream: list[dict[str, Any]] = (), container: dict[str, Any] | None = None
    ) -> None:
        """Write or update the root files (``dataset_description.json``, ``.bidsignore``, ``logs/CITATION.md``).

        Safe with concurrent participants: done under a lock, each file renamed into place.
        """
        with locked(self.out_dir):
            for stale in remove_stale_temporaries(self.out_dir, skip=("sub-*", "group")):
                get_logger().info("Removed %s, left by a run that was killed.", stale)
            description = self.out_dir / "dataset_description.json"
            generated = {"Name": "bsym", "Version": __version__, "CodeURL": CODE_URL, "ConfigurationHash": config_hash}
            if container:
                generated["Container"] = container
            data: dict[str, Any] = {}
            if description.exists():
                try:
                    data = json.loads(description.read_text())
                except json.JSONDecodeError:
                    data = {}
            data.update(
                {
                    "Name": data.get("Name", "bsym-app derivatives"),
                    "BIDSVersion": "1.11.0",
                    "DatasetType": "derivative",
                    "GeneratedBy": [generated, *_unique(upstream)],
                }
            )
            links = dict(data.get("DatasetLinks", {}))
            links.update({name: str(root) for name, root in self.datasets.items()})
            data["DatasetLinks"] = links
            write_json(description, data)
            write_text(self.out_dir / ".bidsignore", BIDSIGNORE)
            citation = self.out_dir / "logs" / "CITATION.md"
            if not citation.exists():  # --boilerplate-only may have written the full methods text
                write_text(citation, CITATION.format(version=__version__, url=CODE_URL))


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar of a data file (``x.nii.gz`` -> ``x.json``)."""
    path = Path(path)
    return path.with_name(path.name.split(".")[0] + ".json")


def _unique(items) -> list[dict[str, Any]]:
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def upstream_generated_by(datasets: Mapping[str, Path]) -> list[dict[str, Any]]:
    """``GeneratedBy`` entries of the input derivative datasets (fMRIPrep, QSIPrep), in order."""
    entries = []
    for name, root in datasets.items():
        if name == "raw":
            continue
        try:
            data = json.loads((Path(root) / "dataset_description.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        entries += data.get("GeneratedBy", [])
    return entries


def pybids_config() -> Path:
    """Path of the pybids configuration that indexes bsym-app outputs (``stat-``, ``atlas-``, ``model/``).

    Use it with pybids' ``derivatives`` configuration, not ``bids`` (it redefines ``datatype``):
    ``BIDSLayout(out_dir, validate=False, config=[pybids_config(), "derivatives"])``.
    """
    return Path(str(resources.files("bsym_cli.bids").joinpath("data/pybids_config.json")))
