"""fMRI workflow of bsym-app: fMRIPrep BOLD run -> parcel tables and windows for the model.

Public API (plain functions first, the Nipype workflow around them):

* :func:`pipelines.fmri.workflow.init_fmri_wf` -- the per-run Nipype workflow (``inputnode``: ``bold_file,
  mask_file, confounds_file, t_r``; ``outputnode``: ``timeseries, relmat, coverage, windows, metadata``).
* :func:`pipelines.fmri.atlas_grid.atlas_on_grid` -- atlas resampled (nearest) to a BOLD grid, cached per grid.
* :func:`pipelines.fmri.parcellate.parcel_means` -- ``(T, R)`` parcel means and ``(R,)`` coverage.
* :func:`pipelines.fmri.denoise.denoise` -- dummy scans, confound presets, censoring, band-pass.
* :func:`pipelines.fmri.resample.resample_to_tr` -- band-limited (polyphase) TR change.
* :func:`pipelines.fmri.windows.cut_windows` -- ``(W, R, T)`` windows.
* :func:`pipelines.fmri.model_input.load_model_input` -- the ``.npz`` contract with the model stage.
* :mod:`pipelines.fmri.tables` -- timeseries, relmat and coverage TSV writers.

Submodules are imported on use (this package imports nothing heavy).
"""
