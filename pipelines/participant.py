"""One participant's Nipype graph: an fMRI workflow per BOLD run and a dMRI workflow per diffusion series.

Each run's outputs are gathered by a ``RecordOutputs`` node into a small JSON manifest in the work
directory, so the caller can copy finished runs to their BIDS names even when another run crashed
(Nipype drops identity nodes from the executed graph, so ``outputnode`` results are not kept on disk).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nipype.interfaces.base import (
    DynamicTraitedSpec,
    TraitedSpec,
    isdefined,
    traits,
)
from nipype.interfaces.io import add_traits
from nipype.pipeline import engine as pe

from pipelines.atomic import write_text
from pipelines.fingerprint import CodeInputSpec, FingerprintedInterface


class _RecordInputSpec(DynamicTraitedSpec, CodeInputSpec):
    manifest = traits.Str(mandatory=True, desc="JSON file to write (absolute path)")


class _RecordOutputSpec(TraitedSpec):
    manifest = traits.Str(desc="the JSON file written")


class RecordOutputs(FingerprintedInterface):
    """Write the values of its dynamic inputs (file paths) to a JSON manifest."""

    implementation = ("pipelines.atomic",)
    input_spec = _RecordInputSpec
    output_spec = _RecordOutputSpec

    def __init__(self, fields: Sequence[str] = (), **inputs: Any) -> None:
        super().__init__(**inputs)
        self._fields = list(fields)
        add_traits(self.inputs, self._fields)

    def _run_interface(self, runtime):
        values = {}
        for name in self._fields:
            value = getattr(self.inputs, name)
            values[name] = value if isdefined(value) else None
        path = write_text(self.inputs.manifest, json.dumps(values, indent=1))
        self._results["manifest"] = str(path)
        return runtime


def init_participant_wf(
    *,
    name: str,
    manifest_dir: str | Path,
    bold_runs: Sequence[Mapping[str, Any]] = (),
    dwi_runs: Sequence[Mapping[str, Any]] = (),
    fmri_options: Mapping[str, Any] | None = None,
    dmri_options: Mapping[str, Any] | None = None,
) -> pe.Workflow:
    """Compose the per-run workflows of one participant.

    Parameters
    ----------
    name : str
        Workflow name (e.g. ``sub_01_wf``).
    manifest_dir : str or Path
        Where each run's ``<id>.json`` manifest of output files is written.
    bold_runs : sequence of mapping
        ``id`` (unique, alphanumeric/underscore), ``bold_file``, ``mask_file``, ``confounds_file``, ``t_r``,
        ``atlas_dseg`` (atlas image in the run's template space).
    dwi_runs : sequence of mapping
        ``id``, ``dwi_file``, ``bval_file``, ``bvec_file``, ``mask_file`` (or None), ``atlas_dseg``,
        and optionally ``registration``/``template_file``/``denoise`` overriding ``dmri_options``.
    fmri_options, dmri_options : mapping
        Keyword arguments of :func:`pipelines.fmri.workflow.init_fmri_wf` and
        :func:`pipelines.dmri.workflow.init_dmri_wf` shared by all runs (labels, names, TR, ...).

    Returns
    -------
    nipype.pipeline.engine.Workflow
        Its ``__desc__`` is the methods text of its workflows (each distinct text once).
    """
    workflow = pe.Workflow(name=name)
    descriptions: list[str] = []
    manifest_dir = Path(manifest_dir)
    if bold_runs:
        from pipelines.fmri.workflow import OUTPUT_FIELDS as FMRI_OUT
        from pipelines.fmri.workflow import init_fmri_wf

        for run in bold_runs:
            sub = init_fmri_wf(
                name=f"fmri_{run['id']}_wf",
                atlas_dseg=run["atlas_dseg"],
                atlas_transforms=run.get("atlas_transforms", ()),
                **dict(fmri_options or {}),
            )
            descriptions.append(getattr(sub, "__desc__", ""))
            for field in ("bold_file", "mask_file", "confounds_file", "t_r"):
                if run.get(field) is not None:
                    setattr(sub.inputs.inputnode, field, str(run[field]) if field != "t_r" else float(run[field]))
            _record(workflow, sub, run["id"], FMRI_OUT, manifest_dir)
    if dwi_runs:
        from pipelines.dmri.workflow import OUTPUT_FIELDS as DMRI_OUT
        from pipelines.dmri.workflow import init_dmri_wf

        for run in dwi_runs:
            options = {
                **dict(dmri_options or {}),
                **{
                    k: run[k]
                    for k in ("registration", "template_file", "template_mask_file", "transforms", "denoise")
                    if k in run
                },
            }
            sub = init_dmri_wf(name=f"dmri_{run['id']}_wf", atlas_dseg=run["atlas_dseg"], **options)
            descriptions.append(getattr(sub, "__desc__", ""))
            for field in ("dwi_file", "bval_file", "bvec_file", "mask_file"):
                if run.get(field) is not None:
                    setattr(sub.inputs.inputnode, field, str(run[field]))
            _record(workflow, sub, run["id"], DMRI_OUT, manifest_dir)
    workflow.__desc__ = "\n\n".join(dict.fromkeys(d.strip() for d in descriptions if d and d.strip()))
    return workflow


def _record(workflow: pe.Workflow, sub: pe.Workflow, run_id: str, fields: Sequence[str], manifest_dir: Path) -> None:
    record = pe.Node(
        RecordOutputs(fields=list(fields), manifest=str(manifest_dir / f"{run_id}.json")),
        name=f"record_{run_id}",
        run_without_submitting=True,
        overwrite=True,
    )  # always rewrite
    workflow.connect([(sub, record, [(f"outputnode.{f}", f) for f in fields])])


def read_manifest(manifest_dir: str | Path, run_id: str) -> dict[str, str | None] | None:
    """The output files of run ``run_id``, or None if the run did not finish."""
    path = Path(manifest_dir) / f"{run_id}.json"
    return json.loads(path.read_text()) if path.exists() else None
