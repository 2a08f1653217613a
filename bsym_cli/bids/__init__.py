"""BIDS input and output: finding and checking inputs, atlases, and writing derivatives."""
