"""Templates and template-to-template transforms from TemplateFlow, read from a populated ``TEMPLATEFLOW_HOME``.

The app never downloads at run time: cluster nodes are often offline. TemplateFlow's skeleton lists every file
(unfetched ones are empty placeholders), so a missing file is named exactly, with the command that fetches it on
a machine with network. The container image fills ``TEMPLATEFLOW_HOME`` when it is built; ``bsym demo`` lays out
the demo's template from wheel data.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from bsym_cli.utils.errors import MissingInputError

#: The brain template registered to the mean b0 of a DWI that is in no known space (FSL's MNI152, 1 mm)
REGISTRATION_TEMPLATE = "MNI152NLin6Asym"
REGISTRATION_QUERY = {"resolution": 1, "desc": "brain", "suffix": "T1w"}


def templateflow_home(environ: MutableMapping[str, str] | None = None) -> Path:
    """``TEMPLATEFLOW_HOME``, else ``<bsym cache>/templateflow``, which is then set in ``environ`` (default
    ``os.environ``) for the TemplateFlow client. The cache outlives the work directory, so a template fetched
    or laid out once serves every later run."""
    from pipelines.wheeldata import cache_dir

    env = os.environ if environ is None else environ
    if not env.get("TEMPLATEFLOW_HOME"):
        env["TEMPLATEFLOW_HOME"] = str(cache_dir(env) / "templateflow")
    return Path(env["TEMPLATEFLOW_HOME"])


def fetch_hint(template: str, query: dict, source: str | None = None) -> str:
    arguments = ", ".join([repr(template), *(f"{k}={v!r}" for k, v in query.items())])
    arguments += f", **{{'from': {source!r}}}" if source else ""
    return (
        f"fetch it once on a machine with network with `bsym templates` (or TEMPLATEFLOW_HOME={templateflow_home()} "
        f'python -c "from templateflow import api; api.get({arguments})"), then run where that folder is seen '
        "(or use the container image, which has it)"
    )


def _local(template: str, query: dict) -> list[Path]:
    templateflow_home()
    from templateflow import api

    return sorted(Path(p) for p in api.ls(template, **query))


def fetched(template: str, **query) -> tuple[list[Path], list[Path]]:
    """TemplateFlow's files of ``template`` matching ``query``: those on disk, and those listed but not fetched."""
    listed = _local(template, query)
    present = [p for p in listed if p.is_file() and p.stat().st_size > 0]
    return present, [p for p in listed if p not in present]


def template_file(template: str, **query) -> Path:
    """The one TemplateFlow file of ``template`` matching ``query``, present on disk; exit 66 naming it if not.

    Parameters
    ----------
    template : str
        TemplateFlow identifier without ``tpl-`` (``MNI152NLin6Asym``).
    **query
        TemplateFlow entities (``resolution=1, desc="brain", suffix="T1w"``).
    """
    matches = _local(template, query)
    if len(matches) != 1:
        found = ", ".join(p.name for p in matches) or "nothing"
        raise MissingInputError(
            f"TemplateFlow has {found} for template {template} with {query} (TEMPLATEFLOW_HOME="
            f"{templateflow_home()}); expected exactly one file."
        )
    path = matches[0]
    if not path.is_file() or path.stat().st_size == 0:
        raise MissingInputError(f"TemplateFlow file {path} has not been fetched; {fetch_hint(template, query)}.")
    return path


def template_transform(source: str, target: str) -> Path | None:
    """TemplateFlow's transform that resamples an image in ``source`` into ``target`` space
    (``tpl-<target>_from-<source>_mode-image_xfm.h5``), present on disk.

    Returns None when TemplateFlow has no such transform; exits 66 naming it when it exists but is not fetched.
    """
    query = {"suffix": "xfm", "extension": ".h5", "mode": "image"}
    matches = [p for p in _local(target, query) if f"_from-{source}_" in p.name]
    if not matches:
        return None
    path = matches[0]
    if not path.is_file() or path.stat().st_size == 0:
        hint = fetch_hint(target, query, source)
        raise MissingInputError(f"TemplateFlow transform {path} has not been fetched; {hint}.")
    return path


#: Every TemplateFlow file the app may read: (template, query). ``bsym templates`` fetches them.
APP_FILES: tuple[tuple[str, dict], ...] = (
    (REGISTRATION_TEMPLATE, REGISTRATION_QUERY),
    ("MNI152NLin2009cAsym", {"suffix": "xfm", "extension": ".h5", "mode": "image", "from": "MNI152NLin6Asym"}),
    ("MNI152NLin6Asym", {"suffix": "xfm", "extension": ".h5", "mode": "image", "from": "MNI152NLin2009cAsym"}),
    # --atlas Schaefer400Parcels7Networks (bsym_cli.bids.atlases); other Schaefer sizes: bsym templates --atlas
    ("MNI152NLin6Asym", {"atlas": "Schaefer2018", "desc": "400Parcels7Networks"}),
    ("MNI152NLin2009cAsym", {"atlas": "Schaefer2018", "desc": "400Parcels7Networks"}),
)
