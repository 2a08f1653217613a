"""Thin Nipype interfaces around the plain fMRI functions; each writes its files into the node's folder.

Intermediate files (``.npz`` in the node folder): ``parcels.npz`` (``means`` (T, R), ``coverage`` (R,)) and
``denoised.npz`` (``series`` (T_kept, R), ``frames`` (T_kept,), ``coverage`` (R,), ``t_r``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from nibabel.nifti1 import Nifti1Header
from nipype.interfaces.base import (
    Bunch,
    File,
    TraitedSpec,
    isdefined,
    traits,
)

from pipelines.atomic import write_text
from pipelines.errors import InputDataError
from pipelines.fingerprint import CodeInputSpec, FingerprintedInterface
from pipelines.fmri.atlas_grid import atlas_on_grid
from pipelines.fmri.denoise import STRATEGIES, denoise
from pipelines.fmri.model_input import prepare_model_input, save_model_input
from pipelines.fmri.parcellate import DEFAULT_CHUNK, parcel_means
from pipelines.fmri.tables import pearson_relmat, write_coverage_tsv, write_relmat_tsv, write_timeseries_tsv
from pipelines.images import load_image


class _AtlasOnGridInputSpec(CodeInputSpec):
    atlas_dseg = File(exists=True, mandatory=True, desc="atlas label image in the BOLD's template space")
    reference = File(exists=True, mandatory=True, desc="image on the target grid (BOLD or mask)")
    cache_dir = traits.Str(desc="folder of cached atlases; default: this node's folder")
    transforms = traits.List(File(exists=True), desc="template-to-template transforms (ITK/ANTs), if any")


class _AtlasOnGridOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="int32 atlas on the reference grid")


class AtlasOnGrid(FingerprintedInterface):
    """Nearest-neighbour atlas on the BOLD grid, cached per grid (:func:`~pipelines.fmri.atlas_grid.atlas_on_grid`)."""

    implementation = ("pipelines.fmri.atlas_grid",)
    input_spec = _AtlasOnGridInputSpec
    output_spec = _AtlasOnGridOutputSpec

    def _run_interface(self, runtime: Bunch) -> Bunch:
        cache = self.inputs.cache_dir if isdefined(self.inputs.cache_dir) else runtime.cwd
        transforms = self.inputs.transforms if isdefined(self.inputs.transforms) else []
        self._results["out_file"] = str(
            atlas_on_grid(self.inputs.atlas_dseg, self.inputs.reference, cache_dir=cache, transforms=transforms)
        )
        return runtime


class _ParcellateInputSpec(CodeInputSpec):
    bold_file = File(exists=True, mandatory=True, desc="4D BOLD series")
    mask_file = File(exists=True, mandatory=True, desc="brain mask on the BOLD grid")
    atlas_file = File(exists=True, mandatory=True, desc="atlas on the BOLD grid")
    labels = traits.List(traits.Int, mandatory=True, desc="atlas indices in output order")
    chunk = traits.Int(DEFAULT_CHUNK, usedefault=True, desc="volumes read at once")


class _ParcellateOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="parcels.npz: means (T, R), coverage (R,)")


class ParcellateBold(FingerprintedInterface):
    """Parcel means and coverage of a BOLD run (:func:`~pipelines.fmri.parcellate.parcel_means`)."""

    implementation = ("pipelines.fmri.parcellate",)
    input_spec = _ParcellateInputSpec
    output_spec = _ParcellateOutputSpec

    def _run_interface(self, runtime: Bunch) -> Bunch:
        means, coverage = parcel_means(
            self.inputs.bold_file,
            self.inputs.atlas_file,
            self.inputs.mask_file,
            self.inputs.labels,
            chunk=self.inputs.chunk,
        )
        out = Path(runtime.cwd) / "parcels.npz"
        np.savez(out, means=means, coverage=coverage)
        self._results["out_file"] = str(out)
        return runtime


class _DenoiseInputSpec(CodeInputSpec):
    in_file = File(exists=True, mandatory=True, desc="parcels.npz")
    bold_file = File(exists=True, mandatory=True, desc="the BOLD series (TR fallback from its header)")
    confounds_file = File(exists=True, desc="fMRIPrep confounds TSV")
    t_r = traits.Float(desc="repetition time in s; default: the BOLD header")
    strategy = traits.Enum(*STRATEGIES, usedefault=True, desc="denoising preset")
    dummy_scans = traits.Int(desc="leading frames to drop; default: non_steady_state_outlier columns")
    band_pass = traits.Tuple(
        traits.Either(None, traits.Float), traits.Either(None, traits.Float), desc="(high_pass_hz, low_pass_hz)"
    )
    min_coverage = traits.Range(0.0, 1.0, 0.5, usedefault=True, desc="parcels under it become n/a")
    labels = traits.List(traits.Int, mandatory=True, desc="atlas indices")
    names = traits.List(traits.Str, mandatory=True, desc="parcel names")
    fd_threshold = traits.Float(desc="FD (mm) above which 'scrubbing' censors a frame; default: the preset's")


class _DenoiseOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="denoised.npz")
    metadata = File(exists=True, desc="denoising metadata JSON")


class DenoiseParcels(FingerprintedInterface):
    """Coverage threshold, dummy scans, confound regression, censoring, band-pass (:func:`denoise`)."""

    implementation = ("pipelines.fmri.denoise",)
    input_spec = _DenoiseInputSpec
    output_spec = _DenoiseOutputSpec

    def _run_interface(self, runtime: Bunch) -> Bunch:
        with np.load(self.inputs.in_file) as parcels:
            means, coverage = parcels["means"], parcels["coverage"]
        t_r = self.inputs.t_r if isdefined(self.inputs.t_r) else header_t_r(self.inputs.bold_file)
        na = coverage < self.inputs.min_coverage
        means = means.copy()
        means[:, na] = np.nan
        result = denoise(
            means,
            t_r=t_r,
            strategy=self.inputs.strategy,
            confounds_file=self.inputs.confounds_file if isdefined(self.inputs.confounds_file) else None,
            dummy_scans=self.inputs.dummy_scans if isdefined(self.inputs.dummy_scans) else None,
            band_pass=tuple(self.inputs.band_pass) if isdefined(self.inputs.band_pass) else None,
            fd_threshold=self.inputs.fd_threshold if isdefined(self.inputs.fd_threshold) else None,
        )
        out = Path(runtime.cwd) / "denoised.npz"
        np.savez(out, series=result.series, frames=result.frames, coverage=coverage, t_r=t_r)
        band = (
            None if result.band_pass is None else dict(zip(("HighPassHz", "LowPassHz"), result.band_pass, strict=True))
        )
        metadata = {
            "DenoiseStrategy": result.strategy,
            "ConfoundColumns": result.confound_columns,
            "DummyScans": result.dummy_scans,
            "DummyScansSource": result.dummy_scans_source,
            "CensoredFrames": result.censored_frames,
            **({"FDThreshold": self.inputs.fd_threshold} if isdefined(self.inputs.fd_threshold) else {}),
            "BandPass": band,
            "RepetitionTimeOriginal": t_r,
            "FramesInput": result.n_frames_input,
            "FramesKept": int(result.frames.size),
            "MinCoverage": self.inputs.min_coverage,
            "NAParcels": [
                {"index": int(label), "name": name, "coverage": float(cov)}
                for label, name, cov, bad in zip(self.inputs.labels, self.inputs.names, coverage, na, strict=True)
                if bad
            ],
        }
        self._results["out_file"] = str(out)
        self._results["metadata"] = _write_json(metadata, Path(runtime.cwd) / "denoise.json")
        return runtime


class _WindowsInputSpec(CodeInputSpec):
    in_file = File(exists=True, mandatory=True, desc="denoised.npz")
    labels = traits.List(traits.Int, mandatory=True, desc="atlas indices")
    target_t_r = traits.Float(mandatory=True, desc="the checkpoint's TR, in s")
    window_length = traits.Int(mandatory=True, desc="frames per window")
    window_stride = traits.Int(desc="frames between window starts; default: window_length")


class _WindowsOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="model input .npz")
    metadata = File(exists=True, desc="windowing metadata JSON")


class CutModelWindows(FingerprintedInterface):
    """Censored-frame filling, resampling to the target TR, windows (:func:`prepare_model_input`)."""

    implementation = ("pipelines.fmri.model_input",)
    input_spec = _WindowsInputSpec
    output_spec = _WindowsOutputSpec

    def _run_interface(self, runtime: Bunch) -> Bunch:
        with np.load(self.inputs.in_file) as denoised:
            series, frames, t_r = denoised["series"], denoised["frames"], float(denoised["t_r"])
        stride = self.inputs.window_stride if isdefined(self.inputs.window_stride) else None
        arrays = prepare_model_input(
            series,
            frames,
            self.inputs.labels,
            t_r=t_r,
            target_t_r=self.inputs.target_t_r,
            window_length=self.inputs.window_length,
            window_stride=stride,
        )
        n_win = int(arrays["windows"].shape[0])
        metadata = {
            "RepetitionTimeTarget": self.inputs.target_t_r,
            "Resampling": "scipy.signal.resample_poly (polyphase, Kaiser anti-aliasing FIR, line padding); "
            "censored frames linearly interpolated first",
            "FramesResampled": arrays["n_frames"].item(),
            "WindowLength": self.inputs.window_length,
            "WindowStride": stride or self.inputs.window_length,
            "Windows": n_win,
            "ModelSkipReason": None
            if n_win
            else (
                f"the run gives {arrays['n_frames'].item()} frames at TR {self.inputs.target_t_r} s, fewer than "
                f"one window of {self.inputs.window_length} frames; the model stage skips it"
            ),
        }
        self._results["out_file"] = str(save_model_input(arrays, Path(runtime.cwd) / "model_input.npz"))
        self._results["metadata"] = _write_json(metadata, Path(runtime.cwd) / "windows.json")
        return runtime


class _TablesInputSpec(CodeInputSpec):
    in_file = File(exists=True, mandatory=True, desc="denoised.npz")
    labels = traits.List(traits.Int, mandatory=True, desc="atlas indices")
    names = traits.List(traits.Str, mandatory=True, desc="parcel names")
    metadata_files = traits.List(File(exists=True), desc="JSON files merged into the run's metadata")


class _TablesOutputSpec(TraitedSpec):
    timeseries = File(exists=True, desc="parcel mean time series TSV")
    relmat = File(exists=True, desc="Pearson correlation TSV")
    coverage = File(exists=True, desc="coverage TSV")
    metadata = File(exists=True, desc="merged metadata JSON")


class WriteParcelTables(FingerprintedInterface):
    """Timeseries, relmat and coverage TSVs plus the merged metadata JSON of a run."""

    implementation = ("pipelines.fmri.tables",)
    input_spec = _TablesInputSpec
    output_spec = _TablesOutputSpec

    def _run_interface(self, runtime: Bunch) -> Bunch:
        with np.load(self.inputs.in_file) as denoised:
            series, coverage = denoised["series"], denoised["coverage"]
        cwd = Path(runtime.cwd)
        names = self.inputs.names
        self._results["timeseries"] = str(write_timeseries_tsv(series, names, cwd / "timeseries.tsv"))
        self._results["relmat"] = str(write_relmat_tsv(pearson_relmat(series), names, cwd / "relmat.tsv"))
        self._results["coverage"] = str(write_coverage_tsv(self.inputs.labels, names, coverage, cwd / "coverage.tsv"))
        metadata: dict = {}
        for path in self.inputs.metadata_files if isdefined(self.inputs.metadata_files) else []:
            metadata.update(json.loads(Path(path).read_text()))
        self._results["metadata"] = _write_json(metadata, cwd / "metadata.json")
        return runtime


def header_t_r(bold_file: str | Path) -> float:
    """Repetition time from a NIfTI header, in seconds (``pixdim[4]``, honouring ms units).

    Parameters
    ----------
    bold_file : str or Path
        4D NIfTI image.

    Returns
    -------
    float
        TR in seconds.
    """
    header = load_image(bold_file).header
    if not isinstance(header, Nifti1Header):
        raise InputDataError(
            f"{bold_file}: expected a NIfTI image, found a {type(header).__name__}; the TR is read "
            "from a NIfTI header (pixdim[4])."
        )
    t_r = float(header.get_zooms()[3]) if len(header.get_zooms()) > 3 else 0.0
    if header.get_xyzt_units()[1] == "msec":
        t_r /= 1000.0
    if t_r <= 0:
        raise InputDataError(
            f"{bold_file}: the header has no repetition time (pixdim[4] = {t_r}); give the TR "
            "through the BOLD JSON sidecar (RepetitionTime)."
        )
    return t_r


def _write_json(payload: dict, path: Path) -> str:
    """Write JSON through a temporary name; return the path as str."""
    return str(write_text(path, json.dumps(payload, indent=2, default=float)))
