"""``bsym demo``: write the simulated demo study (made by ``simulation``) as BIDS and fMRIPrep derivatives."""
