"""Simulators of the demo study, the dMRI phantoms and the pretraining corpus.

Nothing here reads or writes BIDS; ``bsym demo`` (``bsym_cli/commands/demo``) writes what these make.
"""
