"""dMRI: one DWI to a structural connectome on an atlas (docs/architecture.md, "Participant run: data flow").

Workflow: :func:`pipelines.dmri.workflow.init_dmri_wf`. Plain functions, usable without Nipype:

* :func:`pipelines.dmri.gradients.check_gradients` - validate a DWI's bval/bvec (input validation step)
* :func:`pipelines.dmri.mask.brain_mask` - given mask or median Otsu on the mean b0
* :func:`pipelines.dmri.denoise.denoise_dwi` - optional MP-PCA
* :func:`pipelines.dmri.reconstruct.fit_fods` - CSD, tensor peaks when the directions are too few
* :func:`pipelines.dmri.track.track` - seeded, multithreaded probabilistic tracking
* :func:`pipelines.dmri.register.register_atlas` - template -> b0 (affine / SyN / none), labels warped
* :func:`pipelines.dmri.connectome.count_connectome`, :func:`~pipelines.dmri.connectome.parcel_volumes`,
  :func:`~pipelines.dmri.connectome.signed_connectome`, :func:`~pipelines.dmri.connectome.write_relmat`
* :mod:`simulation.phantom` - seeded phantoms with known bundles (tests, bench, demo)

Submodules are imported on use (``from pipelines.dmri.workflow import init_dmri_wf``) so that importing the
package stays cheap.
"""
