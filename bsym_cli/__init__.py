"""bsym-app: BrainSymphony embeddings of BIDS studies, as a BIDS-App."""

__version__ = "0.1.0"
