"""Defaults shared by the library and the command line, declared once.

The app's configuration (``bsym_cli/cli/config.py``) and the library's functions both read these, so a run
with no options and a direct call of a workflow builder do the same thing.
"""

#: Random seed of everything seeded: tracking, region groupings, probes' folds.
DEFAULT_SEED = 20250623
#: Streamlines per tractogram. About a minute of tracking on 2 cores for a demo participant; research runs
#: usually ask for 1-10 million (``--streamlines``).
DEFAULT_STREAMLINES = 20_000
