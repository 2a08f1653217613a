"""``init_dmri_wf``: one DWI to a structural connectome on the atlas, as a Nipype workflow."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe

from pipelines.defaults import DEFAULT_SEED, DEFAULT_STREAMLINES
from pipelines.dmri.interfaces import Connectome, FitFods, PrepareDwi, RegisterAtlas, SaveTractogram, Track
from pipelines.dmri.track import TrackingParameters
from pipelines.docstrings import fill_doc

INPUT_FIELDS = ["dwi_file", "bval_file", "bvec_file", "mask_file"]
OUTPUT_FIELDS = ["atlas_dwi", "count_relmat", "signed_relmat", "registration_figure", "tractogram", "metadata"]
_DEFAULTS = TrackingParameters()


@fill_doc
def init_dmri_wf(
    *,
    name: str = "dmri_wf",
    atlas_dseg: str | Path,
    labels: Sequence[int],
    names: Sequence[str],
    template_file: str | Path | None = None,
    registration: str = "affine",
    transforms: Sequence[str | Path] = (),
    template_mask_file: str | Path | None = None,
    n_streamlines: int = DEFAULT_STREAMLINES,
    seed: int = DEFAULT_SEED,
    step_size: float = _DEFAULTS.step_size,
    max_angle: float = _DEFAULTS.max_angle,
    fa_threshold: float = _DEFAULTS.fa_threshold,
    stop_fa: float = _DEFAULTS.stop_fa,
    seed_density: float = _DEFAULTS.seed_density,
    min_length: float = _DEFAULTS.min_length,
    max_length: float = _DEFAULTS.max_length,
    denoise: bool = False,
    save_tractogram: bool = False,
    omp_nthreads: int = 1,
    mem_gb: float = 2.0,
) -> pe.Workflow:
    """Build the dMRI workflow: mask, FODs, tracking, atlas into DWI space, connectome.

    Graph: ``PrepareDwi`` (gradient check, mask, optional denoising, mean b0) -> ``FitFods`` (CSD, tensor
    peaks when the directions are too few) -> ``Track``; ``RegisterAtlas`` (template -> mean b0, labels by
    nearest neighbour) in parallel with the model fit; ``Connectome`` joins them. Every node caches in the
    workflow's ``base_dir``, so a rerun with the same inputs recomputes nothing.

    Parameters
    ----------
    name : str
        Workflow name.
    atlas_dseg : str or Path
        Atlas labels in the template's space (``tpl-<T>_atlas-<A>_dseg.nii.gz``).
    labels : sequence of int
        Atlas indices in output order, length R.
    names : sequence of str
        Parcel names, length R, same order (``Node`` column of the relmats).
    template_file : str or Path, optional
        Brain-extracted template of the atlas's space (e.g. MNI152 T1 1 mm brain); required unless
        ``registration="none"``.
    registration : {"affine", "syn", "none", "transforms", "t1w"}
        ``none`` when the DWI is already in the template's space (labels are only resampled);
        ``transforms`` to apply ``transforms``; ``t1w`` to apply ``transforms`` onto the T1w given as
        ``template_file`` and align that T1w rigidly to the b0.
    template_mask_file : str or Path, optional
        Brain mask of ``template_file`` (``t1w``).
    transforms : sequence of str or Path
        With ``registration="transforms"``: ITK/ANTs files taking the template's space to the DWI's, in
        antsApplyTransforms order.
    n_streamlines : int
        Streamlines to keep (``--streamlines``).
    %(seed)s
    step_size : float, mm
    max_angle : float, degrees
    fa_threshold : float
        Seeds go into voxels with FA above this.
    stop_fa : float
        Tracking stops below this FA.
    seed_density : float
        Seeds per white-matter voxel per round.
    min_length, max_length : float, mm
        Kept streamline lengths.
    denoise : bool
        MP-PCA denoising before modelling (``--dwi-denoise``).
    save_tractogram : bool
        Also write the streamlines as ``.trx`` (``outputnode.tractogram``).
    %(omp_nthreads)s
    %(mem_gb)s

    Returns
    -------
    nipype.pipeline.engine.Workflow
        ``inputnode`` fields ``dwi_file, bval_file, bvec_file, mask_file`` (mask may be None or "");
        ``outputnode`` fields ``atlas_dwi, count_relmat, signed_relmat, registration_figure, tractogram,
        metadata`` (file paths; ``tractogram`` stays undefined unless ``save_tractogram``).
    """
    labels, names = [int(v) for v in labels], [str(v) for v in names]
    if len(labels) != len(names):
        raise ValueError(f"init_dmri_wf: {len(labels)} labels but {len(names)} names")
    if registration in ("affine", "syn", "t1w") and template_file is None:
        raise ValueError(f"init_dmri_wf: registration={registration!r} needs template_file")
    workflow = pe.Workflow(name=name)
    workflow.__desc__ = _methods_text(
        registration=registration,
        n_streamlines=n_streamlines,
        step_size=step_size,
        max_angle=max_angle,
        fa_threshold=fa_threshold,
    )
    inputnode = pe.Node(IdentityInterface(fields=INPUT_FIELDS), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=OUTPUT_FIELDS), name="outputnode")

    prepare = pe.Node(
        PrepareDwi(denoise=denoise, omp_nthreads=omp_nthreads),
        name="prepare_dwi",
        n_procs=omp_nthreads if denoise else 1,
        mem_gb=mem_gb,
    )
    fods = pe.Node(
        FitFods(min_fa=min(stop_fa, fa_threshold), omp_nthreads=omp_nthreads),
        name="fit_fods",
        n_procs=omp_nthreads,
        mem_gb=mem_gb,
    )
    tracking = pe.Node(
        Track(
            n_streamlines=n_streamlines,
            seed=seed,
            step_size=step_size,
            max_angle=max_angle,
            fa_threshold=fa_threshold,
            stop_fa=stop_fa,
            seed_density=seed_density,
            min_length=min_length,
            max_length=max_length,
            omp_nthreads=omp_nthreads,
            endpoints_only=not save_tractogram,
        ),
        name="track",
        n_procs=omp_nthreads,
        mem_gb=mem_gb,
    )
    register = pe.Node(
        RegisterAtlas(atlas_file=str(atlas_dseg), labels=labels, method=registration),
        name="register_atlas",
        mem_gb=mem_gb,
    )
    if template_file is not None:
        register.inputs.template_file = str(template_file)
    if transforms:
        register.inputs.transforms = [str(t) for t in transforms]
    if template_mask_file is not None:
        register.inputs.template_mask_file = str(template_mask_file)
    connectome = pe.Node(Connectome(labels=labels, names=names), name="connectome", mem_gb=mem_gb)

    workflow.connect(
        [
            (
                inputnode,
                prepare,
                [
                    ("dwi_file", "dwi_file"),
                    ("bval_file", "bval_file"),
                    ("bvec_file", "bvec_file"),
                    ("mask_file", "mask_file"),
                ],
            ),
            (inputnode, fods, [("bval_file", "bval_file"), ("bvec_file", "bvec_file")]),
            (prepare, fods, [("dwi_file", "dwi_file"), ("mask_file", "mask_file")]),
            (fods, tracking, [("fod_file", "fod_file"), ("fa_file", "fa_file"), ("model_file", "model_file")]),
            (prepare, tracking, [("mask_file", "mask_file")]),
            (prepare, register, [("b0_file", "b0_file"), ("mask_file", "mask_file")]),
            (tracking, connectome, [("streamlines_file", "streamlines_file"), ("tracking_file", "tracking_file")]),
            (fods, connectome, [("model_file", "model_file")]),
            (register, connectome, [("atlas_dwi", "atlas_dwi"), ("metrics_file", "registration_file")]),
            (prepare, connectome, [("mask_file", "mask_file")]),
            (register, outputnode, [("atlas_dwi", "atlas_dwi"), ("figure", "registration_figure")]),
            (
                connectome,
                outputnode,
                [("count_relmat", "count_relmat"), ("signed_relmat", "signed_relmat"), ("metadata", "metadata")],
            ),
        ]
    )
    if save_tractogram:
        saver = pe.Node(SaveTractogram(), name="save_tractogram")
        workflow.connect(
            [
                (tracking, saver, [("streamlines_file", "streamlines_file")]),
                (prepare, saver, [("b0_file", "reference_file")]),
                (saver, outputnode, [("tractogram", "tractogram")]),
            ]
        )
    return workflow


def _methods_text(
    *, registration: str, n_streamlines: int, step_size: float, max_angle: float, fa_threshold: float
) -> str:
    registration_text = {
        "affine": "The atlas template was aligned to the mean b0 with an affine transform (DIPY, mutual "
        "information) and the labels were warped with nearest-neighbour interpolation.",
        "syn": "The atlas template was aligned to the mean b0 with an affine then a symmetric diffeomorphic "
        "transform (DIPY) and the labels were warped with nearest-neighbour interpolation.",
        "none": "The DWI was taken to be in the atlas's template space; labels were resampled with "
        "nearest-neighbour interpolation.",
        "transforms": "The atlas labels were brought into the DWI's anatomical space through the participant's "
        "existing template-to-anatomy transform (NiTransforms, nearest-neighbour interpolation).",
        "t1w": "The atlas labels were brought onto the participant's T1w through its existing template-to-T1w "
        "transform (NiTransforms), and the T1w brain was aligned rigidly to the mean b0 (DIPY, mutual "
        "information); labels followed with nearest-neighbour interpolation.",
    }[registration]
    return (
        "Structural connectomes were computed with DIPY: fibre orientation distributions by constrained "
        "spherical deconvolution (tensor peaks when fewer than 15 directions were available), then "
        f"{n_streamlines} streamlines by probabilistic tracking (step {step_size} mm, maximum angle "
        f"{max_angle} degrees) seeded in voxels with FA > {fa_threshold}. {registration_text} Streamlines "
        "were counted between the parcels at their two ends, and the signed connectome was "
        "log10(count / mean parcel volume in mm^3)."
    )
