"""The one place that names and writes outputs (docs/architecture.md, "Derivatives layout").

Names follow XCP-D (BIDS 1.11 ``atlas-``), built from the source file's entities; every file is written
atomically with a JSON sidecar that records ``Sources`` as BIDS URIs. The dataset's shared root files
(``dataset_description.json``, ``.bidsignore``, ``logs/CITATION.md``, ``logs/CITATION.bib``) are written under a lock.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from bsym_cli import __version__
from bsym_cli.utils.errors import OptionError
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

#: Files and folders that BIDS does not define (yet): the validator skips them. Folders are written without a
#: trailing slash, which bids-validator-deno 3 needs to match them.
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
*.html
**/model
**/figures
**/log
logs
group
"""

#: README.md of an OUTPUT_DIR (written once; a user may edit it).
README = """\
# bsym-app derivatives

BrainSymphony embeddings written by bsym-app {version} from fMRIPrep (and QSIPrep or raw diffusion) data.

- `sub-<label>/func/`: parcel time series (`stat-mean_timeseries`), functional connectivity (`relmat`) and
  parcel coverage, per BOLD run and atlas.
- `sub-<label>/dwi/`: the atlas on the diffusion grid (`space-dwi_dseg`) and structural connectomes (streamline
  counts and the signed connectome the model reads).
- `sub-<label>/model/`: region embeddings, the subject feature row, predictions, reconstruction quality,
  attention maps and parcel maps (not BIDS-defined; listed in `.bidsignore`).
- `sub-<label>/figures/`, `sub-<label>.html`: quality-control figures and reports.
- `group/`: the study's feature table, probes and network identification.
- `sourcedata/atlases/`: the atlas dataset used. `logs/`: methods text and citations.

Every sidecar records its `Sources` as BIDS URIs; `dataset_description.json` links the input datasets.
"""

#: The licence of what bsym-app writes, and how to acknowledge it.
LICENSE = "Apache-2.0"
HOW_TO_ACKNOWLEDGE = (
    "Cite BrainSymphony (Khajehnejad, Habibollahi, Stoliker, Razi; arXiv:2506.18314) and the libraries listed in "
    "logs/CITATION.md; logs/CITATION.bib has the BibTeX entries."
)

CITATION = """\
# Citing bsym-app outputs

Results were computed with bsym-app {version}, which runs the BrainSymphony foundation model
(Khajehnejad, Habibollahi, Stoliker, Razi; arXiv:2506.18314) on fMRIPrep and QSIPrep derivatives,
using {libraries}.
See each participant's HTML report for the methods of that run; logs/CITATION.bib has BibTeX entries.
"""

#: Libraries cited with the version that ran: (distribution, how the text names it, BibTeX key).
CITED_LIBRARIES = (
    ("nipype", "Nipype (Gorgolewski et al., 2011)", "nipype"),
    ("nilearn", "nilearn (Abraham et al., 2014)", "nilearn"),
    ("dipy", "DIPY (Garyfallidis et al., 2014)", "dipy"),
    ("pybids", "pybids (Yarkoni et al., 2019)", "pybids"),
    ("torch", "PyTorch (Paszke et al., 2019)", "pytorch"),
)

CITATION_BIB = """\
@article{{brainsymphony,
  title = {{BrainSymphony: A Transformer-Driven Fusion of fMRI Time Series and Structural Connectivity}},
  author = {{Khajehnejad, Moein and Habibollahi, Forough and Stoliker, Devon and Razi, Adeel}},
  journal = {{arXiv preprint arXiv:2506.18314}},
  year = {{2025}},
  eprint = {{2506.18314}},
  archivePrefix = {{arXiv}}
}}

@article{{nipype,
  title = {{Nipype: a flexible, lightweight and extensible neuroimaging data processing framework in Python}},
  author = {{Gorgolewski, Krzysztof and others}},
  journal = {{Frontiers in Neuroinformatics}},
  volume = {{5}}, pages = {{13}}, year = {{2011}}, doi = {{10.3389/fninf.2011.00013}},
  note = {{version {nipype}}}
}}

@article{{nilearn,
  title = {{Machine learning for neuroimaging with scikit-learn}},
  author = {{Abraham, Alexandre and others}},
  journal = {{Frontiers in Neuroinformatics}},
  volume = {{8}}, pages = {{14}}, year = {{2014}}, doi = {{10.3389/fninf.2014.00014}},
  note = {{nilearn version {nilearn}}}
}}

@article{{dipy,
  title = {{DIPY, a library for the analysis of diffusion MRI data}},
  author = {{Garyfallidis, Eleftherios and others}},
  journal = {{Frontiers in Neuroinformatics}},
  volume = {{8}}, pages = {{8}}, year = {{2014}}, doi = {{10.3389/fninf.2014.00008}},
  note = {{version {dipy}}}
}}

@article{{pybids,
  title = {{PyBIDS: Python tools for BIDS datasets}},
  author = {{Yarkoni, Tal and others}},
  journal = {{Journal of Open Source Software}},
  volume = {{4}}, number = {{40}}, pages = {{1294}}, year = {{2019}}, doi = {{10.21105/joss.01294}},
  note = {{version {pybids}}}
}}

@inproceedings{{pytorch,
  title = {{PyTorch: An Imperative Style, High-Performance Deep Learning Library}},
  author = {{Paszke, Adam and others}},
  booktitle = {{Advances in Neural Information Processing Systems 32}},
  year = {{2019}},
  note = {{version {torch}}}
}}
"""


def library_versions() -> dict[str, str]:
    """Installed versions of the cited libraries (``unknown`` when a distribution has no metadata)."""
    from importlib import metadata

    versions = {}
    for name, _, _ in CITED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


def citation_text() -> str:
    """The methods paragraph of ``logs/CITATION.md``, with the versions that ran."""
    versions = library_versions()
    named = [f"{text.split(' (')[0]} {versions[name]} ({text.split(' (')[1]}" for name, text, _ in CITED_LIBRARIES]
    return CITATION.format(version=__version__, libraries=", ".join(named[:-1]) + " and " + named[-1])


def citation_bib() -> str:
    """``logs/CITATION.bib``: the paper and the libraries, with the versions that ran."""
    return CITATION_BIB.format(**library_versions())


def file_uri(path: str | Path) -> str:
    """``file://`` URI of a local folder or file."""
    return Path(path).absolute().as_uri()


def container_info() -> dict[str, str] | None:
    """``GeneratedBy[0].Container`` (type and tag) from the image's environment; None outside a container."""
    tag = os.environ.get("BSYM_CONTAINER_TAG")
    kind = os.environ.get("BSYM_CONTAINER_TYPE")
    if os.environ.get("APPTAINER_CONTAINER"):
        kind = "apptainer"
    elif os.environ.get("SINGULARITY_CONTAINER"):
        kind = "singularity"
    if not kind:
        return None
    return {"Type": kind, **({"Tag": tag} if tag else {})}


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


def bids_uri(path: str | Path, datasets: Mapping[str, Path], own: str | Path | None = None) -> str:
    """A BIDS URI of ``path``: ``bids::<relative path>`` inside ``own`` (this dataset), ``bids:<name>:<relative
    path>`` inside one of the linked ``datasets``, else a ``file://`` URI."""
    path = Path(path).absolute()
    roots = {**{name: Path(root) for name, root in datasets.items()}, **({"": Path(own)} if own else {})}
    for name, root in sorted(roots.items(), key=lambda kv: -len(str(kv[1].absolute()))):
        root = root.absolute()
        if root in path.parents:
            return f"bids:{name}:{path.relative_to(root).as_posix()}"
    return path.as_uri()


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
                meta["Sources"] = [bids_uri(s, self.datasets, own=self.out_dir) for s in sources]
            write_json(sidecar_path(path), meta)
        return path

    def uri(self, path: str | Path) -> str:
        """The BIDS URI of ``path`` as this dataset's sidecars write it."""
        return bids_uri(path, self.datasets, own=self.out_dir)

    def write_dataset_files(
        self, *, config_hash: str, upstream: list[dict[str, Any]] = (), strict_config: bool = False
    ) -> None:
        """Write or update the root files (``dataset_description.json``, ``.bidsignore``, ``logs/CITATION.*``).

        Safe with concurrent participants: done under a lock, each file renamed into place. An OUTPUT_DIR made
        with other scientific settings (another ``ConfigurationHash``) is reported, and refused with
        ``strict_config`` before anything is written.
        """
        with locked(self.out_dir):
            description = self.out_dir / "dataset_description.json"
            data: dict[str, Any] = {}
            if description.exists():
                try:
                    data = json.loads(description.read_text())
                except json.JSONDecodeError:
                    data = {}
            _check_configuration(data, config_hash, description, strict=strict_config)
            for stale in remove_stale_temporaries(self.out_dir, skip=("sub-*", "group")):
                get_logger().info("Removed %s, left by a run that was killed.", stale)
            generated: dict[str, Any] = {"Name": "bsym-app", "Version": __version__, "ConfigurationHash": config_hash}
            container = container_info()
            if container:
                generated["Container"] = container
            links = {k: v for k, v in data.get("DatasetLinks", {}).items() if k not in self.datasets}
            links.update({name: file_uri(root) for name, root in self.datasets.items()})
            data.update(
                {
                    "Name": data.get("Name", "bsym-app derivatives"),
                    "BIDSVersion": "1.11.0",
                    "DatasetType": "derivative",
                    "License": LICENSE,
                    "HowToAcknowledge": HOW_TO_ACKNOWLEDGE,
                    "GeneratedBy": [generated, *_unique(upstream)],
                    "SourceDatasets": [{"URL": f"bids:{name}:"} for name in sorted(links)],
                    "DatasetLinks": dict(sorted(links.items())),
                }
            )
            write_json(description, data)
            write_text(self.out_dir / ".bidsignore", BIDSIGNORE)
            if not (self.out_dir / "README.md").exists():
                write_text(self.out_dir / "README.md", README.format(version=__version__))
            citation = self.out_dir / "logs" / "CITATION.md"
            if not citation.exists():  # --boilerplate-only may have written the full methods text
                write_text(citation, citation_text())
            write_text(self.out_dir / "logs" / "CITATION.bib", citation_bib())


def _check_configuration(data: dict[str, Any], config_hash: str, description: Path, *, strict: bool) -> None:
    """Warn (or refuse, exit 64) when OUTPUT_DIR was made with other scientific settings."""
    ours = [g for g in data.get("GeneratedBy", []) if isinstance(g, dict) and g.get("Name") in ("bsym-app", "bsym")]
    before = ours[0].get("ConfigurationHash") if ours else None
    if before is None or before == config_hash:
        return
    message = (
        f"{description} records ConfigurationHash {before}, but this run's settings hash to {config_hash}: "
        "participants processed with different settings would be mixed in one dataset. Use another OUTPUT_DIR "
        "for these settings, or the settings of the earlier run (its config.toml is in the work directory)."
    )
    if strict:
        raise OptionError(message + " Refusing because of --strict-config.")
    get_logger().warning(message + " Continuing (--strict-config refuses).")


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
