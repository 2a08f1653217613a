"""Saving the tractogram (``--save-tractogram``) as TRX, with the DWI as spatial reference."""

from __future__ import annotations

from pathlib import Path

from dipy.io.stateful_tractogram import Space, StatefulTractogram
from dipy.io.streamline import save_tractogram
from dipy.tracking.streamline import Streamlines


def save_trx(streamlines: Streamlines, reference_file: str | Path, path: str | Path) -> Path:
    """Write streamlines to a ``.trx`` file.

    Parameters
    ----------
    streamlines : Streamlines
        N streamlines of shape (n_i, 3), world (RAS+) mm.
    reference_file : str or Path
        Image on the DWI grid (defines the voxel space stored in the file).
    path : str or Path
        Output file, ending in ``.trx``.

    Returns
    -------
    Path
    """
    tractogram = StatefulTractogram(streamlines, str(reference_file), Space.RASMM)
    save_tractogram(tractogram, str(path), bbox_valid_check=False)
    return Path(path)
