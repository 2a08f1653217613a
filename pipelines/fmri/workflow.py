"""The per-run fMRI workflow: atlas on the BOLD grid -> parcel means -> denoising -> tables and model windows.

Graph (one instance per BOLD run; node names are stable so a rerun with the same work dir reuses results)::

    inputnode(bold_file, mask_file, confounds_file, t_r)
      -> atlas_grid  (AtlasOnGrid: nearest-neighbour atlas on the BOLD grid, cached in ``work_cache_dir``)
      -> parcellate  (ParcellateBold: parcel means + coverage; the heavy node, annotated with mem_gb / n_procs)
      -> denoise     (DenoiseParcels: coverage threshold, dummy scans, confounds, censoring, band-pass)
      -> windows     (CutModelWindows: target TR, windows -> model_input.npz)
      -> tables      (WriteParcelTables: timeseries / relmat / coverage TSVs, merged metadata JSON)
    outputnode(timeseries, relmat, coverage, windows, metadata)

All outputs are files inside the node folders; the derivatives sink copies them to their BIDS names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from pipelines.docstrings import fill_doc
from pipelines.fmri.denoise import STRATEGIES
from pipelines.fmri.interfaces import AtlasOnGrid, CutModelWindows, DenoiseParcels, ParcellateBold, WriteParcelTables
from pipelines.fmri.parcellate import DEFAULT_CHUNK

INPUT_FIELDS = ("bold_file", "mask_file", "confounds_file", "t_r")
OUTPUT_FIELDS = ("timeseries", "relmat", "coverage", "windows", "metadata")


@fill_doc
def init_fmri_wf(
    *,
    name: str = "fmri_wf",
    atlas_dseg: str | Path,
    labels: Sequence[int],
    names: Sequence[str],
    target_t_r: float,
    atlas_transforms: Sequence[str | Path] = (),
    window_length: int = 200,
    window_stride: int | None = None,
    denoise_strategy: str = "simple",
    dummy_scans: int | None = None,
    band_pass: tuple[float | None, float | None] | None = None,
    min_coverage: float = 0.5,
    fd_threshold: float | None = None,
    work_cache_dir: str | Path | None = None,
    mem_gb: float = 1.0,
    omp_nthreads: int = 1,
    chunk: int = DEFAULT_CHUNK,
) -> pe.Workflow:
    """Build the workflow that turns one fMRIPrep BOLD run into parcel tables and model windows.

    Parameters
    ----------
    name : str
        Workflow name (unique per run inside a parent workflow, e.g. ``fmri_task_rest_run_1_wf``).
    atlas_dseg : str or Path
        Atlas label image in the BOLD's template space (any grid; resampled to the BOLD grid), or in another
        template with ``atlas_transforms``.
    atlas_transforms : sequence of str or Path
        TemplateFlow transforms from the atlas's template to the BOLD's (antsApplyTransforms order).
    %(labels)s
    names : sequence of str
        Parcel names, same order as ``labels``; the TSV column names.
    target_t_r : float
        The checkpoint's TR, in s; the model windows are resampled to it.
    window_length : int
        Frames per model window at ``target_t_r`` (the model's T).
    window_stride : int, optional
        Frames between window starts; None means ``window_length`` (non-overlapping).
    denoise_strategy : {"simple", "scrubbing", "compcor", "none"}
        Confound preset (nilearn's fMRIPrep loaders).
    dummy_scans : int, optional
        Leading frames to drop; None reads fMRIPrep's ``non_steady_state_outlier`` columns.
    band_pass : tuple (high_pass_hz, low_pass_hz), optional
        Butterworth band-pass after regression; either bound may be None.
    min_coverage : float
        Parcels with a smaller fraction of voxels inside the brain mask become n/a.
    fd_threshold : float, optional
        Framewise displacement (mm) above which the ``scrubbing`` strategy censors a frame; None: 0.5 mm.
    work_cache_dir : str or Path, optional
        Folder where atlases resampled to a grid are cached and shared by all runs; None keeps each in its
        node folder.
    %(mem_gb)s
        Applies to the parcellation node (memory is bounded by ``chunk`` volumes, not by run length).
    %(omp_nthreads)s
    chunk : int
        Volumes read at once by the parcellation.

    Returns
    -------
    nipype.pipeline.engine.Workflow
        With ``inputnode`` fields ``bold_file, mask_file, confounds_file, t_r`` (``t_r`` in s, optional: the
        header's TR otherwise; ``confounds_file`` optional for strategy ``none`` with ``dummy_scans``) and
        ``outputnode`` fields ``timeseries, relmat, coverage, windows, metadata`` (paths).
    """
    if denoise_strategy not in STRATEGIES:
        raise ValueError(f"unknown denoising strategy {denoise_strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if len(labels) != len(names):
        raise ValueError(f"{len(labels)} atlas labels but {len(names)} names; give one name per label")
    labels, names = [int(label) for label in labels], [str(n) for n in names]
    workflow = pe.Workflow(name=name)
    workflow.__desc__ = _methods_text(
        denoise_strategy, band_pass, min_coverage, target_t_r, window_length, window_stride
    )
    if atlas_transforms:
        workflow.__desc__ += (
            " The atlas, defined in another template, was brought into the BOLD's template through "
            "TemplateFlow's template-to-template transform (NiTransforms, nearest-neighbour interpolation)."
        )
    inputnode = pe.Node(niu.IdentityInterface(fields=list(INPUT_FIELDS)), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=list(OUTPUT_FIELDS)), name="outputnode")

    atlas_grid = pe.Node(AtlasOnGrid(atlas_dseg=str(atlas_dseg)), name="atlas_grid", mem_gb=0.5)
    if atlas_transforms:
        atlas_grid.inputs.transforms = [str(t) for t in atlas_transforms]
    if work_cache_dir is not None:
        atlas_grid.inputs.cache_dir = str(work_cache_dir)
    parcellate = pe.Node(
        ParcellateBold(labels=labels, chunk=chunk), name="parcellate", mem_gb=mem_gb, n_procs=omp_nthreads
    )
    denoise = pe.Node(
        DenoiseParcels(strategy=denoise_strategy, min_coverage=min_coverage, labels=labels, names=names),
        name="denoise",
        mem_gb=0.5,
        n_procs=omp_nthreads,
    )
    if dummy_scans is not None:
        denoise.inputs.dummy_scans = int(dummy_scans)
    if band_pass is not None:
        denoise.inputs.band_pass = tuple(band_pass)
    if fd_threshold is not None:
        denoise.inputs.fd_threshold = float(fd_threshold)
    windows = pe.Node(
        CutModelWindows(labels=labels, target_t_r=float(target_t_r), window_length=window_length),
        name="windows",
        mem_gb=0.5,
    )
    if window_stride is not None:
        windows.inputs.window_stride = int(window_stride)
    tables = pe.Node(WriteParcelTables(labels=labels, names=names), name="tables", mem_gb=0.5)
    merge_metadata = pe.Node(niu.Merge(2), name="merge_metadata", run_without_submitting=True)

    workflow.connect(
        [
            (inputnode, atlas_grid, [("bold_file", "reference")]),
            (inputnode, parcellate, [("bold_file", "bold_file"), ("mask_file", "mask_file")]),
            (atlas_grid, parcellate, [("out_file", "atlas_file")]),
            (inputnode, denoise, [("bold_file", "bold_file"), ("confounds_file", "confounds_file"), ("t_r", "t_r")]),
            (parcellate, denoise, [("out_file", "in_file")]),
            (denoise, windows, [("out_file", "in_file")]),
            (denoise, tables, [("out_file", "in_file")]),
            (denoise, merge_metadata, [("metadata", "in1")]),
            (windows, merge_metadata, [("metadata", "in2")]),
            (merge_metadata, tables, [("out", "metadata_files")]),
            (
                tables,
                outputnode,
                [
                    ("timeseries", "timeseries"),
                    ("relmat", "relmat"),
                    ("coverage", "coverage"),
                    ("metadata", "metadata"),
                ],
            ),
            (windows, outputnode, [("out_file", "windows")]),
        ]
    )
    return workflow


def _methods_text(
    strategy: str, band_pass, min_coverage: float, target_t_r: float, length: int, stride: int | None
) -> str:
    """Boilerplate for the report's methods section."""
    cleaning = (
        "No confounds were regressed."
        if strategy == "none"
        else f"Confounds of nilearn's '{strategy}' fMRIPrep preset were regressed from the parcel series "
        "with nilearn.signal.clean."
    )
    band = "" if band_pass is None else f" A Butterworth band-pass ({band_pass[0]}-{band_pass[1]} Hz) followed."
    return (
        "Parcel mean BOLD series were computed over the atlas regions within the brain mask after dropping "
        f"non-steady-state volumes; parcels with less than {min_coverage:.0%} of their voxels inside the mask "
        f"were set to n/a. {cleaning}{band} The cleaned series were resampled to a repetition time of "
        f"{target_t_r} s with polyphase anti-aliasing filters and cut into windows of {length} frames "
        f"(stride {stride or length})."
    )
