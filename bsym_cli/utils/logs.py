"""Logging: what a user needs at INFO, the rest at DEBUG; ``-v`` and ``-vv`` open up more."""

from __future__ import annotations

import logging

LOGGER_NAME = "bsym"


def setup_logging(verbosity: int = 0) -> logging.Logger:
    """Configure the ``bsym`` logger: INFO (default), DEBUG (``-v``), DEBUG also for Nipype (``-vv``)."""
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)-7s | %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.DEBUG if verbosity >= 1 else logging.INFO)
    nipype_level = logging.DEBUG if verbosity >= 2 else logging.WARNING
    logging.getLogger("dipy").setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    for name in ("nipype.workflow", "nipype.interface", "nipype.utils"):
        logging.getLogger(name).setLevel(nipype_level)
    return logger


def get_logger() -> logging.Logger:
    """The ``bsym`` logger."""
    return logging.getLogger(LOGGER_NAME)
