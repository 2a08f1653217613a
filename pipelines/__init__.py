"""Nipype workflows of bsym-app: fMRI parcellation, dMRI connectomes, the model stage.

Scientific functions are plain, tested functions; thin Nipype interfaces wrap them.
"""
