"""Checks of the folders and files named on the command line, done once before any work."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from bsym_cli.cli.config import Config
from bsym_cli.utils.errors import InvalidBIDSError, MissingInputError, OptionError, OutputError

#: Keys of the default queries; --bids-filter-file uses the same ones.
QUERY_KEYS = ("bold", "boldmask", "boldref", "confounds", "dwi", "qsiprep_dwi", "qsiprep_mask", "t1w")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_paths(config: Config) -> None:
    """Refuse bad combinations of BIDS_DIR, OUTPUT_DIR and the work directory; check writability.

    * OUTPUT_DIR equal to BIDS_DIR, or inside its raw tree (anywhere but ``derivatives/``): exit 64.
    * work directory inside BIDS_DIR: exit 64.
    * BIDS_DIR missing: exit 66; without ``dataset_description.json``: exit 16 (participant level only;
      the group level reads OUTPUT_DIR alone).
    * OUTPUT_DIR or the work directory not writable: exit 73.
    BIDS_DIR itself may be read-only: nothing is ever written into it.
    """
    ex = config.execution
    bids, out, work = (Path(os.path.realpath(p)) for p in (ex.bids_dir, ex.output_dir, ex.work_dir))
    if out == bids:
        raise OptionError(f"OUTPUT_DIR {ex.output_dir} is BIDS_DIR; use e.g. {bids}/derivatives/bsym.")
    if _inside(out, bids) and not _inside(out, bids / "derivatives") or out == bids / "derivatives":
        raise OptionError(
            f"OUTPUT_DIR {ex.output_dir} is inside the raw data tree of {bids}; write outputs to "
            f"{bids}/derivatives/<name> or outside BIDS_DIR."
        )
    if _inside(work, bids):
        raise OptionError(
            f"The work directory {ex.work_dir} is inside BIDS_DIR {bids}; pass -w elsewhere (e.g. a scratch folder)."
        )
    if _inside(bids, out):
        raise OptionError(f"BIDS_DIR {bids} is inside OUTPUT_DIR {out}; choose another OUTPUT_DIR.")
    if ex.analysis_level == "participant" and not bids.is_dir():  # group reads OUTPUT_DIR only
        raise MissingInputError(
            f"BIDS_DIR {ex.bids_dir} does not exist; check the path (and the bind mounts when running in a container)."
        )
    if ex.analysis_level == "participant" and not (bids / "dataset_description.json").is_file():
        raise InvalidBIDSError(
            f"{bids} has no dataset_description.json, so it is not a BIDS dataset; point BIDS_DIR to the dataset root."
        )
    for name, given in ex.derivatives.items():
        path = Path(os.path.realpath(given))
        if _inside(out, path) or _inside(path, out):
            raise OptionError(
                f"OUTPUT_DIR {ex.output_dir} overlaps the input derivatives -d {name}={given}; "
                f"write bsym-app outputs to a folder of their own, e.g. {bids}/derivatives/bsym."
            )
    _check_not_other_dataset(out, ex.output_dir)
    for label, folder in (("OUTPUT_DIR", out), ("work directory", work)):
        check_writable(folder, label)


#: ``GeneratedBy[0].Name`` of datasets this app wrote (older versions called themselves ``bsym``).
OWN_NAMES = ("bsym-app", "bsym")


def _check_not_other_dataset(out: Path, given: Path) -> None:
    """Refuse an OUTPUT_DIR that already is another dataset (raw BIDS, fMRIPrep, QSIPrep...): exit 64.

    Writing there would rewrite its ``dataset_description.json`` and break every tool that reads it.
    """
    description = out / "dataset_description.json"
    if not description.is_file():
        return
    try:
        data = json.loads(description.read_text())
        generated = data.get("GeneratedBy") or [{}]
        name = generated[0].get("Name") if isinstance(generated[0], dict) else None
    except (OSError, json.JSONDecodeError, AttributeError, TypeError):
        name, data = None, {}
    if name in OWN_NAMES:
        return
    what = f"the derivatives of {name}" if name else f"a {data.get('DatasetType', 'BIDS')} dataset"
    raise OptionError(
        f"OUTPUT_DIR {given} already holds {what} ({description}); bsym-app would overwrite its "
        "dataset_description.json. Choose a folder of its own, e.g. BIDS_DIR/derivatives/bsym."
    )


def check_writable(folder: Path, label: str) -> None:
    """Create ``folder`` if needed and write a probe file in it; exit 73 if that fails."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".bsym-write-test-{uuid.uuid4().hex[:8]}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise OutputError(
            f"{label} {folder} cannot be written ({exc.strerror}); check its permissions or choose another folder."
        ) from None


def load_bids_filters(path: Path) -> dict[str, dict[str, Any]]:
    """Read ``--bids-filter-file``: a JSON object of query name -> pybids entity filters."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MissingInputError(f"--bids-filter-file {path}: no such file.") from None
    except json.JSONDecodeError as exc:
        raise OptionError(f"--bids-filter-file {path}: not valid JSON ({exc}).") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise OptionError(f'--bids-filter-file {path}: expected {{"bold": {{"task": "rest"}}, ...}}.')
    unknown = sorted(set(data) - set(QUERY_KEYS))
    if unknown:
        raise OptionError(f"--bids-filter-file {path}: unknown query {unknown}; known: {', '.join(QUERY_KEYS)}.")
    return data


def load_plugin_file(path: Path) -> dict[str, Any]:
    """Read ``--nipype-plugin-file`` (YAML or JSON with ``plugin`` and optional ``plugin_args``)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise MissingInputError(f"--nipype-plugin-file {path}: no such file.") from None
    except yaml.YAMLError as exc:
        raise OptionError(f"--nipype-plugin-file {path}: not valid YAML/JSON ({exc}).") from None
    if not isinstance(data, dict) or "plugin" not in data:
        raise OptionError(f"--nipype-plugin-file {path}: needs a 'plugin' key, e.g. plugin: SLURM.")
    return {"plugin": data["plugin"], "plugin_args": data.get("plugin_args") or {}}
