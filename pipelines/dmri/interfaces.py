"""Thin Nipype interfaces around the dMRI plain functions; each writes its results into its node folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    File,
    TraitedSpec,
    isdefined,
    traits,
)

from pipelines.defaults import DEFAULT_SEED, DEFAULT_STREAMLINES
from pipelines.dmri.connectome import (
    SIGNED_TRANSFORM,
    count_connectome,
    parcel_volumes,
    signed_connectome,
    write_relmat,
)
from pipelines.dmri.denoise import denoise_dwi
from pipelines.dmri.figures import registration_figure
from pipelines.dmri.gradients import check_gradients
from pipelines.dmri.mask import brain_mask, mean_b0
from pipelines.dmri.reconstruct import FodFit, fit_fods
from pipelines.dmri.register import register_atlas
from pipelines.dmri.track import TrackingParameters, load_streamlines, save_streamlines, track
from pipelines.dmri.tractogram import save_trx
from pipelines.fingerprint import CodeInputSpec, FingerprintedInterface


class _PrepareDwiInput(CodeInputSpec):
    dwi_file = File(exists=True, mandatory=True, desc="4D DWI")
    bval_file = File(exists=True, mandatory=True, desc="b-values (FSL)")
    bvec_file = File(exists=True, mandatory=True, desc="b-vectors (FSL)")
    mask_file = traits.Any(None, desc="brain mask on the DWI grid; None or '' computes one")
    denoise = traits.Bool(False, usedefault=True, desc="MP-PCA denoising")
    omp_nthreads = traits.Int(1, usedefault=True, nohash=True, desc="threads; does not change the result")


class _PrepareDwiOutput(TraitedSpec):
    dwi_file = File(exists=True, desc="DWI (denoised when asked), float32 when denoised")
    mask_file = File(exists=True, desc="brain mask, uint8")
    b0_file = File(exists=True, desc="mean b0, float32")


class PrepareDwi(FingerprintedInterface):
    """Check the gradient table, make or check the brain mask, optionally denoise, average the b0s."""

    implementation = ("pipelines.dmri.gradients", "pipelines.dmri.mask", "pipelines.dmri.denoise")
    input_spec = _PrepareDwiInput
    output_spec = _PrepareDwiOutput

    def _run_interface(self, runtime):
        gtab = check_gradients(self.inputs.dwi_file, self.inputs.bval_file, self.inputs.bvec_file)
        img = nib.load(self.inputs.dwi_file)
        dwi = np.asarray(img.dataobj, dtype=np.float32)
        mask_file = self.inputs.mask_file if isdefined(self.inputs.mask_file) else None
        mask = brain_mask(dwi, gtab, mask_file=mask_file or None, dwi_file=self.inputs.dwi_file, dwi_affine=img.affine)
        folder = Path(runtime.cwd)
        self._results["dwi_file"] = self.inputs.dwi_file
        if self.inputs.denoise:
            dwi = denoise_dwi(dwi, mask, n_threads=self.inputs.omp_nthreads)
            self._results["dwi_file"] = _save(dwi, img.affine, folder / "desc-denoised_dwi.nii.gz")
        self._results["mask_file"] = _save(mask.astype(np.uint8), img.affine, folder / "desc-brain_mask.nii.gz")
        self._results["b0_file"] = _save(mean_b0(dwi, gtab), img.affine, folder / "desc-meanb0_dwi.nii.gz")
        return runtime


class _FitFodsInput(CodeInputSpec):
    dwi_file = File(exists=True, mandatory=True)
    bval_file = File(exists=True, mandatory=True)
    bvec_file = File(exists=True, mandatory=True)
    mask_file = File(exists=True, mandatory=True)
    min_fa = traits.Float(
        0.0, usedefault=True, desc="CSD only within one voxel of FA >= this (tracking reads no others); 0: everywhere"
    )
    omp_nthreads = traits.Int(1, usedefault=True, nohash=True, desc="threads; does not change the result")


class _FitFodsOutput(TraitedSpec):
    fod_file = File(exists=True, desc="SH coefficients (X, Y, Z, K), float32")
    fa_file = File(exists=True, desc="fractional anisotropy, float32")
    model_file = File(exists=True, desc="JSON: model, sh_order, response, min_fa")


class FitFods(FingerprintedInterface):
    """CSD (or tensor peaks when the directions are too few) in the mask voxels tracking can read."""

    implementation = ("pipelines.dmri.gradients", "pipelines.dmri.csd", "pipelines.dmri.reconstruct")
    input_spec = _FitFodsInput
    output_spec = _FitFodsOutput

    def _run_interface(self, runtime):
        gtab = check_gradients(self.inputs.dwi_file, self.inputs.bval_file, self.inputs.bvec_file)
        img = nib.load(self.inputs.dwi_file)
        mask = np.asarray(nib.load(self.inputs.mask_file).dataobj) > 0
        dwi = np.asarray(img.dataobj, dtype=np.float32)
        fit = fit_fods(dwi, gtab, mask, min_fa=self.inputs.min_fa, n_jobs=self.inputs.omp_nthreads)
        folder = Path(runtime.cwd)
        self._results["fod_file"] = _save(fit.sh, img.affine, folder / "model-fod_dwimap.nii.gz")
        self._results["fa_file"] = _save(fit.fa, img.affine, folder / "param-fa_dwimap.nii.gz")
        self._results["model_file"] = _write_json(
            {
                "Model": fit.model,
                "SHOrder": fit.sh_order,
                "Response": list(fit.response),
                "FitMinFA": self.inputs.min_fa,
            },
            folder / "model.json",
        )
        return runtime


class _TrackInput(CodeInputSpec):
    fod_file = File(exists=True, mandatory=True)
    fa_file = File(exists=True, mandatory=True)
    mask_file = File(exists=True, mandatory=True)
    model_file = File(exists=True, mandatory=True)
    n_streamlines = traits.Int(DEFAULT_STREAMLINES, usedefault=True, desc="streamlines to keep")
    seed = traits.Int(DEFAULT_SEED, usedefault=True, desc="random seed")
    step_size = traits.Float(mandatory=True)
    max_angle = traits.Float(mandatory=True)
    fa_threshold = traits.Float(mandatory=True)
    stop_fa = traits.Float(mandatory=True)
    seed_density = traits.Float(mandatory=True)
    min_length = traits.Float(mandatory=True)
    max_length = traits.Float(mandatory=True)
    omp_nthreads = traits.Int(1, usedefault=True, nohash=True, desc="threads; does not change the result")
    endpoints_only = traits.Bool(True, usedefault=True, desc="store only streamline ends (no tractogram)")


class _TrackOutput(TraitedSpec):
    streamlines_file = File(exists=True, desc=".npz with points and lengths, world mm (ends only by default)")
    tracking_file = File(exists=True, desc="JSON: parameters, seeds, time")


class Track(FingerprintedInterface):
    """Probabilistic tracking from white-matter seeds."""

    implementation = ("pipelines.dmri.reconstruct", "pipelines.dmri.track")
    input_spec = _TrackInput
    output_spec = _TrackOutput

    def _run_interface(self, runtime):
        fod_img = nib.load(self.inputs.fod_file)
        model = json.loads(Path(self.inputs.model_file).read_text())
        fit = FodFit(
            sh=np.asarray(fod_img.dataobj, dtype=np.float32),
            fa=np.asarray(nib.load(self.inputs.fa_file).dataobj, dtype=np.float32),
            model=model["Model"],
            sh_order=model["SHOrder"],
            min_fa=model.get("FitMinFA", 0.0),
        )
        mask = np.asarray(nib.load(self.inputs.mask_file).dataobj) > 0
        params = TrackingParameters(**{name: getattr(self.inputs, name) for name in _TRACKING_FIELDS})
        result = track(
            fit,
            mask,
            fod_img.affine,
            params,
            omp_nthreads=self.inputs.omp_nthreads,
            endpoints_only=self.inputs.endpoints_only,
        )
        folder = Path(runtime.cwd)
        self._results["streamlines_file"] = str(save_streamlines(result.streamlines, folder / "streamlines.npz"))
        info = {key: getattr(params, name) for name, key in _TRACKING_FIELDS.items()}
        info.update(
            Algorithm="DIPY probabilistic tracking, FA threshold stopping",
            PMF=_PMF_SOURCES[result.pmf],
            StreamlinesKept=len(result.streamlines),
            SeedsTracked=result.n_seeds,
            Complete=result.complete,
            MeanLengthMm=round(result.mean_length_mm, 2),
            Threads=self.inputs.omp_nthreads,
        )
        # the wall time goes to the log, not the sidecar: the same inputs must give the same bytes
        logging.getLogger("nipype.interface").info(
            "Tracked %d streamlines in %.1f s", len(result.streamlines), result.seconds
        )
        self._results["tracking_file"] = _write_json(info, folder / "tracking.json")
        return runtime


#: TrackingResult.pmf -> the sidecar's description of what the tracker sampled.
_PMF_SOURCES = {
    "table": "FOD clipped at zero, tabulated on DIPY's 362-direction sphere, trilinear interpolation",
    "sh": "FOD from trilinearly interpolated SH coefficients at every step",
}

#: TrackingParameters field -> sidecar key.
_TRACKING_FIELDS = {
    "n_streamlines": "StreamlinesRequested",
    "seed": "Seed",
    "step_size": "StepSizeMm",
    "max_angle": "MaxAngleDeg",
    "fa_threshold": "SeedFAThreshold",
    "stop_fa": "StopFAThreshold",
    "seed_density": "SeedsPerVoxel",
    "min_length": "MinLengthMm",
    "max_length": "MaxLengthMm",
}


class _RegisterAtlasInput(CodeInputSpec):
    b0_file = File(exists=True, mandatory=True)
    mask_file = File(exists=True, mandatory=True)
    template_file = File(exists=True, desc="template of the atlas's space (not needed for method 'none')")
    atlas_file = File(exists=True, mandatory=True)
    labels = traits.List(traits.Int, mandatory=True)
    method = traits.Enum("affine", "syn", "none", "transforms", "t1w", usedefault=True)
    template_mask_file = File(exists=True, desc="brain mask of template_file (method 't1w')")
    transforms = traits.List(File(exists=True), desc="ITK/ANTs transform files (method 'transforms')")


class _RegisterAtlasOutput(TraitedSpec):
    atlas_dwi = File(exists=True, desc="labels on the DWI grid, int32")
    figure = File(exists=True, desc="PNG edge overlay")
    metrics_file = File(exists=True, desc="JSON registration metrics")


class RegisterAtlas(FingerprintedInterface):
    """Register the template to the mean b0, warp the atlas, draw the quality figure."""

    implementation = ("pipelines.dmri.register", "pipelines.dmri.figures")
    input_spec = _RegisterAtlasInput
    output_spec = _RegisterAtlasOutput

    def _run_interface(self, runtime):
        b0_img = nib.load(self.inputs.b0_file)
        mask = np.asarray(nib.load(self.inputs.mask_file).dataobj) > 0
        template = self.inputs.template_file if isdefined(self.inputs.template_file) else None
        result = register_atlas(
            template_file=template,
            atlas_file=self.inputs.atlas_file,
            b0_img=b0_img,
            mask=mask,
            labels=self.inputs.labels,
            method=self.inputs.method,
            transforms=self.inputs.transforms if isdefined(self.inputs.transforms) else None,
            template_mask_file=self.inputs.template_mask_file if isdefined(self.inputs.template_mask_file) else None,
        )
        folder = Path(runtime.cwd)
        self._results["atlas_dwi"] = _save(
            np.asarray(result.atlas_img.dataobj, dtype=np.int32), b0_img.affine, folder / "space-dwi_dseg.nii.gz"
        )
        metrics = result.metrics
        dice = "" if metrics["DiceBrain"] is None else f", brain Dice {metrics['DiceBrain']:.3f}"
        title = f"{metrics['Method']}{dice}, {metrics['RegionsPresent']}/{metrics['RegionsTotal']} regions"
        outline = (
            np.asarray(result.template_img.dataobj)
            if result.template_img is not None
            else (np.asarray(result.atlas_img.dataobj) > 0).astype(np.float32)
        )
        self._results["figure"] = str(
            registration_figure(
                np.asarray(b0_img.dataobj, dtype=np.float32),
                outline,
                mask,
                folder / "desc-registration.svg",
                title=title,
            )
        )
        self._results["metrics_file"] = _write_json(metrics, folder / "registration.json")
        return runtime


class _ConnectomeInput(CodeInputSpec):
    streamlines_file = File(exists=True, mandatory=True)
    atlas_dwi = File(exists=True, mandatory=True)
    mask_file = File(exists=True, mandatory=True)
    labels = traits.List(traits.Int, mandatory=True)
    names = traits.List(traits.Str, mandatory=True)
    tracking_file = File(exists=True, mandatory=True)
    model_file = File(exists=True, mandatory=True)
    registration_file = File(exists=True, mandatory=True)


class _ConnectomeOutput(TraitedSpec):
    count_relmat = File(exists=True, desc="streamline counts, TSV")
    signed_relmat = File(exists=True, desc="signed SC, TSV")
    metadata = File(exists=True, desc="JSON for the sidecars")


class Connectome(FingerprintedInterface):
    """Endpoint counts, parcel volumes and the signed connectome, as relmat TSVs plus metadata."""

    implementation = ("pipelines.dmri.track", "pipelines.dmri.connectome")
    input_spec = _ConnectomeInput
    output_spec = _ConnectomeOutput

    def _run_interface(self, runtime):
        labels, names = list(self.inputs.labels), list(self.inputs.names)
        if len(labels) != len(names):
            raise ValueError(f"{len(labels)} labels but {len(names)} names")
        streamlines = load_streamlines(self.inputs.streamlines_file)
        atlas_img = nib.load(self.inputs.atlas_dwi)
        counts = count_connectome(streamlines, atlas_img, labels)
        volumes = parcel_volumes(atlas_img, nib.load(self.inputs.mask_file), labels)
        missing = volumes == 0
        folder = Path(runtime.cwd)
        self._results["count_relmat"] = str(
            write_relmat(counts, names, folder / "stat-streamlinecount_relmat.tsv", missing=missing, integer=True)
        )
        self._results["signed_relmat"] = str(
            write_relmat(
                signed_connectome(counts, volumes), names, folder / "stat-signedsc_relmat.tsv", missing=missing
            )
        )
        tracking = json.loads(Path(self.inputs.tracking_file).read_text())
        metadata = {
            "SignedTransform": SIGNED_TRANSFORM,
            "StreamlineCount": tracking["StreamlinesKept"],
            "StreamlinesConnectingParcels": int(counts.sum() // 2),
            "Seed": tracking["Seed"],
            "Tracking": tracking,
            "Reconstruction": json.loads(Path(self.inputs.model_file).read_text()),
            "Registration": json.loads(Path(self.inputs.registration_file).read_text()),
            "ParcelVolumes_mm3": [float(v) for v in volumes],
            "MissingParcels": [name for name, gone in zip(names, missing, strict=True) if gone],
        }
        self._results["metadata"] = _write_json(metadata, folder / "connectome.json")
        return runtime


class _SaveTractogramInput(CodeInputSpec):
    streamlines_file = File(exists=True, mandatory=True)
    reference_file = File(exists=True, mandatory=True, desc="image on the DWI grid")


class _SaveTractogramOutput(TraitedSpec):
    tractogram = File(exists=True, desc=".trx tractogram, RAS mm")


class SaveTractogram(FingerprintedInterface):
    """Write the streamlines as a TRX file (``--save-tractogram``)."""

    implementation = ("pipelines.dmri.track", "pipelines.dmri.tractogram")
    input_spec = _SaveTractogramInput
    output_spec = _SaveTractogramOutput

    def _run_interface(self, runtime):
        path = Path(runtime.cwd) / "tractogram.trx"
        self._results["tractogram"] = str(
            save_trx(load_streamlines(self.inputs.streamlines_file), self.inputs.reference_file, path)
        )
        return runtime


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> str:
    """Save ``data`` on the grid ``affine``, with its dtype and millimetre units."""
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    img.header.set_xyzt_units("mm")
    nib.save(img, path)
    return str(path)


def _write_json(payload: dict, path: Path) -> str:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))
    return str(path)
