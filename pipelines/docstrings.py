"""Parameter descriptions shared by many functions of this project, written once (nilearn's docdict idea).

Use ``@fill_doc`` on a function whose docstring contains ``%(name)s`` placeholders.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

docdict: dict[str, str] = {
    "t_r": "t_r : float\n        Repetition time of the series, in seconds.",
    "atlas_img": (
        "atlas_img : str or Path\n        Integer label image (``dseg``); 0 is background, labels are the"
        " atlas indices."
    ),
    "mask_img": "mask_img : str or Path\n        Brain mask on the data grid; voxels > 0 are brain.",
    "labels": (
        "labels : sequence of int\n        Atlas indices in output order; a region absent from the image"
        " gives n/a (NaN)."
    ),
    "omp_nthreads": "omp_nthreads : int\n        Threads one process may use.",
    "seed": "seed : int\n        Random seed; the same seed gives the same result.",
    "mem_gb": "mem_gb : float\n        Memory the step may use, in GB (Nipype resource annotation).",
}


def fill_doc(func: F) -> F:
    """Replace ``%(name)s`` placeholders in ``func.__doc__`` with entries of :data:`docdict`."""
    if func.__doc__:
        func.__doc__ = func.__doc__ % docdict
    return func
