"""Probabilistic tractography: white-matter seeds, DIPY's multithreaded tracker, and streamline files.

Tracking runs DIPY's Cython tracker (``nbr_threads`` threads without the GIL) on the brain's bounding box
and stops where the interpolated FA falls below ``stop_fa``. The fibre-orientation PMF is tabulated once on
DIPY's 362-direction sphere (the FOD clipped at zero in every brain voxel; ``SimplePmfGen`` interpolates it),
which tracks 2.6-3x faster than evaluating the SH coefficients at every step (``SHCoeffPmfGen``). A table
larger than :data:`PMF_TABLE_MAX_BYTES` is not built; the coefficients are used instead, and the result
records which (``pmf``). Seeds are drawn uniformly inside voxels with FA > ``fa_threshold``, ``seed_density``
per voxel per round, in a random order derived from ``seed``; rounds repeat (each with its own derived
seed) until ``n_streamlines`` streamlines are kept, and the first ``n_streamlines`` are returned, so the
result depends only on the data and the parameters, not on the number of threads.

Progress goes to the ``bsym.dmri`` logger at INFO, at most every :data:`PROGRESS_INTERVAL_S` seconds and once
at the end: streamlines kept of the target, seeds tried, rate and the estimated time left. Each batch of
seeds is tracked in pieces of :data:`PROGRESS_SEEDS_PER_THREAD` seeds per thread so that the clock is read
between pieces; DIPY seeds each streamline's random generator from its seed point, so the pieces do not
change the streamlines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from dipy.data import default_sphere
from dipy.direction.peaks import peaks_from_positions
from dipy.direction.pmf import PmfGen, SHCoeffPmfGen, SimplePmfGen
from dipy.reconst.shm import order_from_ncoef, real_sh_descoteaux
from dipy.tracking.stopping_criterion import ThresholdStoppingCriterion
from dipy.tracking.streamline import Streamlines, length
from dipy.tracking.tracker_parameters import generate_tracking_parameters
from dipy.tracking.tractogen import generate_tractogram
from dipy.tracking.utils import seeds_directions_pairs
from nibabel.affines import voxel_sizes

from pipelines.defaults import DEFAULT_SEED, DEFAULT_STREAMLINES
from pipelines.dmri.reconstruct import FodFit
from pipelines.docstrings import fill_doc

LOGGER = logging.getLogger("bsym.dmri")

#: Tracking gives up after this many seeds per requested streamline (a mask with little white matter).
MAX_SEEDS_PER_STREAMLINE = 50
#: Seconds between two INFO progress lines during tracking (0: one line per piece of seeds).
PROGRESS_INTERVAL_S = 10.0
#: Seeds per thread tracked in one DIPY call; the progress clock is read between two calls.
PROGRESS_SEEDS_PER_THREAD = 2048
#: Largest PMF table (float64, 362 values per voxel of the brain's bounding box) tracking builds: 1.5 GB for a
#: 2 mm brain, about 6 GB at 1.25 mm. Above it the PMF is evaluated from the SH coefficients at every step.
PMF_TABLE_MAX_BYTES = 2 * 1024**3
#: Rows of brain voxels turned into PMF values at once (bounds the temporary to about 24 MB).
_PMF_ROWS = 8192


@dataclass(frozen=True)
class TrackingParameters:
    """Settings of one tracking run; all recorded in the connectome's sidecar.

    Attributes
    ----------
    n_streamlines : int
        Streamlines to keep.
    seed : int
        Random seed; seeds positions, their order and the PMF sampling follow from it.
    step_size : float, mm
    max_angle : float, degrees
        Largest turn between two steps.
    fa_threshold : float
        Seeds go into voxels with FA above this.
    stop_fa : float
        Tracking stops where the interpolated FA falls below this.
    seed_density : float
        Seeds per white-matter voxel per round.
    min_length, max_length : float, mm
        Streamlines outside this length range are dropped.
    pmf_threshold : float
        PMF values below this fraction of the maximum are not sampled.
    """

    n_streamlines: int = DEFAULT_STREAMLINES
    seed: int = DEFAULT_SEED
    step_size: float = 1.0
    max_angle: float = 20.0
    fa_threshold: float = 0.2
    stop_fa: float = 0.15
    seed_density: float = 2.0
    min_length: float = 10.0
    max_length: float = 250.0
    pmf_threshold: float = 0.1


@dataclass
class TrackingResult:
    """Streamlines (world coordinates, mm) and how they were made.

    Attributes
    ----------
    streamlines : Streamlines
        ``n_streamlines`` (or fewer, see ``complete``) arrays of shape (n_points, 3), RAS+ mm.
    n_seeds : int
        Seeds tracked in total.
    seconds : float
        Wall time of the tracking loop.
    complete : bool
        False when the seed cap was reached before ``n_streamlines`` were kept.
    mean_length_mm : float
        Mean streamline length, mm.
    rounds : list of int
        Seeds used from each round's pool.
    pmf : str
        ``"table"`` (the PMF tabulated on the sphere) or ``"sh"`` (evaluated from the coefficients).
    """

    streamlines: Streamlines
    n_seeds: int
    seconds: float
    complete: bool = True
    mean_length_mm: float = 0.0
    rounds: list[int] = field(default_factory=list)
    pmf: str = "table"


@dataclass(frozen=True)
class _PmfSource:
    """What DIPY's tracker reads, on the brain's bounding box.

    Attributes
    ----------
    generator : PmfGen
        DIPY's ``SimplePmfGen`` on the table, shape (X', Y', Z', 362), or ``SHCoeffPmfGen`` on the coefficients,
        shape (X', Y', Z', K); built once, as DIPY checks the whole table on every construction.
    stopping : ThresholdStoppingCriterion
        FA threshold on the same box.
    affine : ndarray, shape (4, 4)
        Voxel-to-world (mm) affine of the box.
    kind : str
        ``"table"`` or ``"sh"``.
    """

    generator: PmfGen
    stopping: ThresholdStoppingCriterion
    affine: np.ndarray
    kind: str


def white_matter_seeds(
    fa: np.ndarray, mask: np.ndarray, affine: np.ndarray, *, fa_threshold: float, density: float, seed: int
) -> np.ndarray:
    """Seed points uniformly inside white-matter voxels, in random order.

    Parameters
    ----------
    fa : ndarray, shape (X, Y, Z)
        Fractional anisotropy.
    mask : ndarray, shape (X, Y, Z), bool
        Brain mask.
    affine : ndarray, shape (4, 4)
        Voxel-to-world (mm) affine.
    fa_threshold : float
        White matter is ``mask & (fa > fa_threshold)``.
    density : float
        Seeds per white-matter voxel (fractional densities sample voxels at random).
    seed : int
        Random seed.

    Returns
    -------
    ndarray, shape (n_seeds, 3), float64
        World coordinates (mm); ``n_seeds = round(density * n_wm_voxels)``.
    """
    voxels = np.argwhere(np.asarray(mask, dtype=bool) & (fa > fa_threshold))
    n_seeds = int(round(density * len(voxels)))
    if n_seeds == 0:
        return np.zeros((0, 3))
    rng = np.random.default_rng(seed)
    repeats = int(np.ceil(density))
    pool = np.repeat(voxels, repeats, axis=0)
    chosen = pool[rng.permutation(len(pool))[:n_seeds]]
    points = chosen + rng.uniform(-0.5, 0.5, size=chosen.shape)
    return points @ affine[:3, :3].T + affine[:3, 3]


@fill_doc
def track(
    fods: FodFit,
    mask: np.ndarray,
    affine: np.ndarray,
    params: TrackingParameters,
    *,
    omp_nthreads: int = 1,
    endpoints_only: bool = False,
) -> TrackingResult:
    """Probabilistic tracking from white-matter seeds until ``params.n_streamlines`` are kept.

    Parameters
    ----------
    fods : FodFit
        SH coefficients and FA on the DWI grid, shape (X, Y, Z, K) and (X, Y, Z).
    mask : ndarray, shape (X, Y, Z), bool
        Brain mask.
    affine : ndarray, shape (4, 4)
        Voxel-to-world (mm) affine of the DWI.
    params : TrackingParameters
        Counts, seed, step, angle, thresholds.
    %(omp_nthreads)s
    endpoints_only : bool
        Keep only each streamline's first and last point (shape (2, 3)): enough for the connectome, and
        what makes millions of streamlines fit in memory (about 48 bytes each instead of kilobytes).

    Returns
    -------
    TrackingResult

    Raises
    ------
    ValueError
        When the seed or stopping FA is below ``fods.min_fa``: tracking would read FODs that were not fitted.
    """
    if min(params.fa_threshold, params.stop_fa) < fods.min_fa:
        raise ValueError(
            f"tracking with seed FA {params.fa_threshold} and stop FA {params.stop_fa} reads FODs below FA "
            f"{fods.min_fa}, where they were not fitted; fit them with fit_fods(..., min_fa=<the smaller of the two>)"
        )
    source = _pmf_source(fods, mask, affine, params)
    target = int(params.n_streamlines)
    kept = Streamlines()
    n_seeds, rounds, total_length, started = 0, [], 0.0, time.perf_counter()
    progress = _Progress(target, PROGRESS_INTERVAL_S, started)
    max_seeds = MAX_SEEDS_PER_STREAMLINE * max(target, 1)
    round_index = 0
    while len(kept) < target and n_seeds < max_seeds:
        pool = white_matter_seeds(
            fods.fa,
            mask,
            affine,
            fa_threshold=params.fa_threshold,
            density=params.seed_density,
            seed=_derived_seed(params.seed, round_index),
        )
        if len(pool) == 0:
            break
        start = 0
        while start < len(pool) and len(kept) < target and n_seeds < max_seeds:
            chunk = _next_chunk(target - len(kept), n_seeds, len(kept))
            batch = pool[start : start + chunk]
            progress.start_batch(len(kept), n_seeds)
            start += len(batch)
            n_seeds += len(batch)
            lines = _track_batch(batch, source, params, omp_nthreads, on_piece=progress.piece)
            total_length += float(np.sum(length(lines))) if len(lines) else 0.0
            kept.extend(Streamlines([line[[0, -1]] for line in lines]) if endpoints_only else lines)
        rounds.append(start)
        round_index += 1
    seconds = time.perf_counter() - started
    complete = len(kept) >= target
    streamlines = Streamlines(kept[:target]) if len(kept) > target else kept
    progress.update(len(streamlines), n_seeds, final=True)
    if not complete:
        LOGGER.warning(
            "tracking kept %d of %d requested streamlines from %d seeds; the white matter "
            "(FA > %.2f) may be small or noisy",
            len(kept),
            target,
            n_seeds,
            params.fa_threshold,
        )
    mean_length = total_length / len(kept) if len(kept) else 0.0
    return TrackingResult(
        streamlines=streamlines,
        n_seeds=n_seeds,
        seconds=seconds,
        complete=complete,
        mean_length_mm=mean_length,
        rounds=rounds,
        pmf=source.kind,
    )


def save_streamlines(streamlines: Streamlines, path: str | Path) -> Path:
    """Write streamlines to a compressed ``.npz`` (``points`` (P, 3) float32, ``lengths`` (N,) int64).

    Parameters
    ----------
    streamlines : Streamlines
        N streamlines of shape (n_i, 3), mm.
    path : str or Path
        Output file.

    Returns
    -------
    Path
    """
    lengths = np.fromiter((len(s) for s in streamlines), dtype=np.int64, count=len(streamlines))
    points = streamlines.get_data() if len(streamlines) else np.zeros((0, 3))
    np.savez_compressed(path, points=np.asarray(points, dtype=np.float32), lengths=lengths)
    return Path(path)


def load_streamlines(path: str | Path) -> Streamlines:
    """Read streamlines written by :func:`save_streamlines`; returns N arrays of shape (n_i, 3), mm."""
    with np.load(path) as npz:
        points, lengths = npz["points"], npz["lengths"]
    bounds = np.cumsum(lengths)[:-1]
    return Streamlines(np.split(points, bounds) if len(lengths) else [])


def _pmf_source(fods: FodFit, mask: np.ndarray, affine: np.ndarray, params: TrackingParameters) -> _PmfSource:
    """Crop the FODs and FA to the brain's bounding box and tabulate the PMF when it fits the budget.

    The box keeps a margin of two voxels plus one step, so a streamline stops on the zero FA outside the brain
    before it can leave the box.
    """
    brain = np.asarray(mask, dtype=bool)
    margin = 2 + int(np.ceil(params.step_size / min(voxel_sizes(affine))))
    found = np.argwhere(brain)
    low = np.maximum(found.min(0) - margin, 0) if len(found) else np.zeros(3, dtype=int)
    high = np.minimum(found.max(0) + 1 + margin, brain.shape) if len(found) else np.array(brain.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
    shifted = np.array(affine, dtype=float)
    shifted[:3, 3] = shifted[:3, :3] @ low + shifted[:3, 3]
    stopping = ThresholdStoppingCriterion(np.ascontiguousarray(fods.fa[box], dtype=float), params.stop_fa)
    table_bytes = int(np.prod(high - low)) * len(default_sphere.vertices) * 8
    if table_bytes > PMF_TABLE_MAX_BYTES:
        LOGGER.info(
            "tracking evaluates the PMF from the SH coefficients: its table would take %.1f GB (budget %.1f GB)",
            table_bytes / 1e9,
            PMF_TABLE_MAX_BYTES / 1e9,
        )
        sh = np.ascontiguousarray(fods.sh[box], dtype=float)
        return _PmfSource(SHCoeffPmfGen(sh, default_sphere, None, legacy=True), stopping, shifted, "sh")
    table = pmf_table(np.ascontiguousarray(fods.sh[box]), brain[box])
    return _PmfSource(SimplePmfGen(table, default_sphere), stopping, shifted, "table")


def pmf_table(sh: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The FOD on DIPY's default sphere, clipped at zero inside ``mask`` and zero outside.

    Parameters
    ----------
    sh : ndarray, shape (X, Y, Z, K)
        SH coefficients, ``descoteaux07`` legacy basis.
    mask : ndarray, shape (X, Y, Z), bool
        Voxels to evaluate.

    Returns
    -------
    ndarray, shape (X, Y, Z, 362), float64
    """
    order = order_from_ncoef(sh.shape[-1])
    basis, _, _ = real_sh_descoteaux(order, default_sphere.theta, default_sphere.phi, legacy=True)
    to_sphere = np.ascontiguousarray(basis.T)  # (K, 362)
    table = np.zeros((*mask.shape, to_sphere.shape[1]))
    rows, coefficients = table.reshape(-1, to_sphere.shape[1]), sh.reshape(-1, sh.shape[-1])
    inside = np.flatnonzero(np.asarray(mask, dtype=bool).ravel(order="C"))
    for first in range(0, len(inside), _PMF_ROWS):
        index = inside[first : first + _PMF_ROWS]
        values = coefficients[index].astype(float) @ to_sphere
        rows[index] = np.maximum(values, 0.0, out=values)
    return table


def _track_batch(
    seeds: np.ndarray,
    source: _PmfSource,
    params: TrackingParameters,
    omp_nthreads: int,
    on_piece: Callable[[int, int], None] | None = None,
) -> Streamlines:
    """Track ``seeds`` in pieces of :data:`PROGRESS_SEEDS_PER_THREAD` per thread, streamlines in seed order.

    ``on_piece(streamlines, seeds)`` is called after each piece with the counts so far in this batch.
    """
    threads = max(int(omp_nthreads), 1)
    piece = max(int(PROGRESS_SEEDS_PER_THREAD), 1) * threads
    # DIPY's probabilistic_tracking, with the PMF generator built once instead of once per call
    settings = generate_tracking_parameters(
        "prob",
        min_len=params.min_length,
        max_len=params.max_length,
        step_size=params.step_size,
        voxel_size=voxel_sizes(source.affine),
        max_angle=params.max_angle,
        pmf_threshold=params.pmf_threshold,
        random_seed=_derived_seed(params.seed, -1),
        return_all=False,
    )

    def pieces() -> Iterator[np.ndarray]:
        n_lines = 0
        for first in range(0, len(seeds), piece):
            points = seeds[first : first + piece]
            peaks = peaks_from_positions(points, None, None, npeaks=1, affine=source.affine, pmf_gen=source.generator)
            points, directions = seeds_directions_pairs(points, peaks, max_cross=None)
            for line in generate_tractogram(
                points,
                directions,
                source.stopping,
                settings,
                source.generator,
                affine=source.affine,
                nbr_threads=threads,
            ):
                n_lines += 1
                yield line
            if on_piece is not None:
                on_piece(n_lines, min(first + piece, len(seeds)))

    # consumed as it comes, so a batch's streamlines are held once
    return Streamlines(pieces())


class _Progress:
    """INFO lines about a tracking run, at most one every ``interval`` seconds, and a last one.

    Parameters
    ----------
    target : int
        Streamlines requested.
    interval : float
        Least seconds between two lines (the last line is always written).
    started : float
        ``time.perf_counter()`` at the start of tracking.
    """

    def __init__(self, target: int, interval: float, started: float) -> None:
        self.target, self.interval = target, float(interval)
        self.started = self.last = started
        self.kept_before = self.seeds_before = 0

    def start_batch(self, kept: int, seeds: int) -> None:
        """Counts before the next batch, to which :meth:`piece` adds the batch's own."""
        self.kept_before, self.seeds_before = kept, seeds

    def piece(self, kept: int, seeds: int) -> None:
        """After a piece of the current batch: ``kept`` streamlines from its first ``seeds`` seeds."""
        self.update(self.kept_before + kept, self.seeds_before + seeds)

    def update(self, kept: int, seeds: int, *, final: bool = False) -> None:
        """Log ``kept`` streamlines from ``seeds`` seeds when the interval has passed, or when ``final``."""
        now = time.perf_counter()
        if not final and now - self.last < self.interval:
            return
        self.last = now
        kept = min(kept, self.target)
        elapsed = now - self.started
        rate = kept / elapsed if elapsed > 0 else 0.0
        if final or kept >= self.target:
            left = "0s left"
        elif rate > 0:
            left = f"about {_duration((self.target - kept) / rate)} left"
        else:
            left = "time left unknown"
        LOGGER.info(
            "tracking: %d/%d streamlines kept (%d%%), %d seeds tried, %.0f streamlines/s, %s",
            kept,
            self.target,
            100 * kept // max(self.target, 1),
            seeds,
            rate,
            left,
        )


def _duration(seconds: float) -> str:
    """``<1s``, ``42s``, ``3m05s`` or ``2h07m``."""
    if seconds < 1:
        return "<1s"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _next_chunk(missing: int, n_seeds: int, n_kept: int) -> int:
    """Seeds for the next batch: enough for the missing streamlines at the yield seen so far."""
    rate = n_kept / n_seeds if n_seeds and n_kept else 0.5
    return int(min(max(missing / max(rate, 0.02) * 1.1, 256), 200_000))


def _derived_seed(seed: int, index: int) -> int:
    """A positive 31-bit seed derived from ``seed`` and a stream index (distinct per round)."""
    return int(np.random.SeedSequence([int(seed), index + 1]).generate_state(1)[0] % (2**31 - 1)) + 1
