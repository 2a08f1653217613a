"""Registration quality figure: the warped template's edges over the subject's b0, three views."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.figures import save_svg


def registration_figure(
    b0: np.ndarray, warped_template: np.ndarray, mask: np.ndarray, path: str | Path, *, title: str = ""
) -> Path:
    """Write an SVG with the b0 in grey and the warped template's contours in colour.

    Parameters
    ----------
    b0 : ndarray, shape (X, Y, Z)
        Mean b0 of the DWI.
    warped_template : ndarray, shape (X, Y, Z)
        Template resampled onto the DWI grid.
    mask : ndarray, shape (X, Y, Z), bool
        DWI brain mask; views cut through its centre of mass.
    path : str or Path
        Output SVG.
    title : str
        Figure title (e.g. the registration metrics).

    Returns
    -------
    Path
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    centre = np.rint(np.argwhere(mask).mean(axis=0)).astype(int) if mask.any() else np.asarray(b0.shape) // 2
    positive = warped_template[warped_template > 0]
    levels = np.percentile(positive, [10, 60]) if positive.size else None
    vmax = np.percentile(b0[mask], 99) if mask.any() else b0.max()
    figure, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    for axis, (ax, name) in enumerate(zip(axes, ("sagittal", "coronal", "axial"), strict=True)):
        index: list[slice | int] = [slice(None)] * 3
        index[axis] = int(centre[axis])
        ax.imshow(np.rot90(b0[tuple(index)]), cmap="gray", vmin=0, vmax=vmax or 1)
        if levels is not None and np.ptp(warped_template[tuple(index)]) > 0:
            ax.contour(
                np.rot90(warped_template[tuple(index)]),
                levels=np.unique(levels),
                colors=["#ff3030", "#30c0ff"][: len(np.unique(levels))],
                linewidths=0.8,
            )
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return save_svg(figure, path)
