"""Defaults shared by the library and the command line, declared once.

The app's configuration (``bsym_cli/cli/config.py``) and the library's functions both read these, so a run
with no options and a direct call of a workflow builder do the same thing.
"""

#: Random seed of everything seeded: tracking, region groupings, probes' folds.
DEFAULT_SEED = 20250623
#: Streamlines per tractogram. Split-half reliability of a 450-region connectome (two independent tractograms
#: of the demo DWI, docs/architecture.md "Streamline count"): at 20k the log counts of the halves agree at
#: r 0.34 and 6% of region pairs are seen; at 100k r 0.70, raw counts r 0.97, 14% of pairs, 37 of 40 planted
#: tracts; 200k adds little (0.78). About 90 s of tracking per thread; ``--streamlines`` for more.
DEFAULT_STREAMLINES = 100_000
