"""``bsym bench tractography``: our DIPY tracking beside MRtrix3 ``tckgen`` on the same phantom, same run.

Both sides get the same DWI, gradient table, brain mask, seed region (FA > threshold), step, length limits
and streamline count; each fits its own response and FODs (DIPY CSD; MRtrix ``dwi2response tournier`` +
``dwi2fod csd``) and tracks with its own probabilistic algorithm at its own default angle (DIPY: PMF sampling
with FA stopping, bsym-app's 20 degrees; MRtrix: iFOD2 with its FOD-amplitude cutoff, 45 degrees; bsym-app's
20 cut iFOD2's planted-edge share on the full-size participant from 0.42 to 0.15). Reported: streamlines per
second and seconds per million for the tracking step alone, the fit times, and the Spearman rank correlation
between the two connectomes (upper triangle, endpoint assignment with a 2 mm search on both sides).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import click
import nibabel as nib
import numpy as np

from pipelines.defaults import DEFAULT_SEED

INSTALL_HINT = (
    "MRtrix3 is not on PATH; install it (Debian/Ubuntu: `apt-get install mrtrix3`, or conda: "
    "`conda install -c mrtrix3 mrtrix3`) to compare against tckgen. Reporting DIPY alone."
)


def run_tractography_bench(
    *,
    streamlines: int = 100_000,
    threads: int = 2,
    size: str = "full",
    seed: int = DEFAULT_SEED,
    work_dir: Path | None = None,
    use_mrtrix: bool = True,
) -> dict:
    """Run both tractographies on one phantom and return the measurements.

    Parameters
    ----------
    streamlines : int
        Streamlines each tool keeps.
    threads : int
        Threads for both tools.
    size : {"full", "small"}
        ``full``: 78 x 94 x 72 voxels of 2 mm, 64 directions, 60 bundles, 256 block parcels;
        ``small``: the 23 x 19 x 15 crossing phantom (7 parcels), for smoke tests.
    seed : int
        Phantom, seeding and sampling seed (``MRTRIX_RNG_SEED`` for tckgen).
    work_dir : Path, optional
        Where the phantom files and MRtrix outputs go (a temporary folder by default).
    use_mrtrix : bool
        Run MRtrix3 when ``tckgen`` is on PATH.

    Returns
    -------
    dict
        ``phantom`` (shape, parcels, wm voxels), ``dipy`` and ``mrtrix`` (``fit_s``, ``track_s``,
        ``streamlines_per_s``, ``s_per_million``, ``planted_top_fraction``), ``spearman``, ``speed_ratio``
        (DIPY streamlines/s over tckgen's), and ``mrtrix_missing`` with the install hint when absent.
    """
    from dipy.core.gradients import gradient_table

    from pipelines.dmri.connectome import count_connectome
    from pipelines.dmri.reconstruct import fit_fods
    from pipelines.dmri.track import TrackingParameters, track
    from simulation.phantom import brain_phantom, crossing_phantom

    phantom = brain_phantom(seed=seed) if size == "full" else crossing_phantom(seed=seed)
    params = TrackingParameters(n_streamlines=streamlines, seed=seed)
    atlas_img = nib.Nifti1Image(phantom.atlas, phantom.affine)
    gtab = gradient_table(phantom.bvals, bvecs=phantom.bvecs)

    started = time.perf_counter()
    fods = fit_fods(phantom.dwi, gtab, phantom.mask, n_jobs=threads)
    fit_s = time.perf_counter() - started
    result = track(fods, phantom.mask, phantom.affine, params, omp_nthreads=threads)
    dipy_counts = count_connectome(result.streamlines, atlas_img, phantom.labels)
    wm = phantom.mask & (fods.fa > params.fa_threshold)
    report = {
        "phantom": {
            "size": size,
            "shape": list(phantom.atlas.shape),
            "directions": int((phantom.bvals > 0).sum()),
            "parcels": len(phantom.labels),
            "wm_voxels": int(wm.sum()),
            "bundles": len(phantom.planted_pairs),
        },
        "streamlines": streamlines,
        "threads": threads,
        "dipy": _side(fit_s, result.seconds, len(result.streamlines), dipy_counts, phantom),
    }
    report["dipy"].update(model=fods.model, sh_order=fods.sh_order, seeds=result.n_seeds)
    tckgen = shutil.which("tckgen")
    if not (use_mrtrix and tckgen):
        report["mrtrix_missing"] = INSTALL_HINT
        return report
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        folder = Path(tmp)
        mrtrix = _run_mrtrix(folder, phantom, wm, fods.sh_order, params, threads)
        report["mrtrix"] = _side(mrtrix["fit_s"], mrtrix["track_s"], streamlines, mrtrix["counts"], phantom)
        report["mrtrix"]["version"] = mrtrix["version"]
    report["spearman"] = _spearman(dipy_counts, mrtrix["counts"])
    report["speed_ratio"] = report["dipy"]["streamlines_per_s"] / report["mrtrix"]["streamlines_per_s"]
    return report


@click.command("tractography")
@click.option(
    "--streamlines",
    type=click.IntRange(min=100),
    default=100_000,
    show_default=True,
    help="Streamlines each tool keeps.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=min(2, os.cpu_count() or 1),
    show_default=True,
    help="Threads for both tools.",
)
@click.option(
    "--size",
    type=click.Choice(["full", "small"]),
    default="full",
    show_default=True,
    help="full: brain-sized phantom; small: the 7-parcel crossing phantom.",
)
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True)
@click.option("--no-mrtrix", is_flag=True, help="Skip MRtrix3 even if tckgen is installed.")
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the measurements to this JSON file.",
)
def tractography(streamlines: int, threads: int, size: str, seed: int, no_mrtrix: bool, json_out: Path | None) -> None:
    """DIPY probabilistic tracking vs MRtrix3 tckgen (iFOD2) on one phantom: speed and connectome agreement."""
    report = run_tractography_bench(
        streamlines=streamlines, threads=threads, size=size, seed=seed, use_mrtrix=not no_mrtrix
    )
    phantom = report["phantom"]
    click.echo(
        f"phantom {size}: {phantom['shape']} voxels (2 mm), {phantom['directions']} directions, "
        f"{phantom['bundles']} bundles, {phantom['parcels']} parcels, {phantom['wm_voxels']} seed voxels; "
        f"{streamlines} streamlines, {threads} thread(s)"
    )
    rows = [("DIPY (ours)", report["dipy"])]
    if "mrtrix" in report:
        rows.append((f"MRtrix3 {report['mrtrix']['version']} tckgen iFOD2", report["mrtrix"]))
    click.echo(f"{'tool':34s} {'fit s':>8s} {'track s':>8s} {'stream/s':>10s} {'s/million':>10s} {'planted':>8s}")
    for name, side in rows:
        click.echo(
            f"{name:34s} {side['fit_s']:8.2f} {side['track_s']:8.2f} {side['streamlines_per_s']:10.0f} "
            f"{side['s_per_million']:10.1f} {side['planted_top_fraction']:8.2f}"
        )
    if "mrtrix" in report:
        click.echo(
            f"DIPY / tckgen speed: {report['speed_ratio']:.2f}x; connectome Spearman rho {report['spearman']:.3f}"
        )
    else:
        click.echo(report["mrtrix_missing"])
    if json_out:
        json_out.write_text(json.dumps(report, indent=2))


def _side(fit_s: float, track_s: float, n_kept: int, counts: np.ndarray, phantom) -> dict:
    rate = n_kept / track_s if track_s > 0 else float("nan")
    return {
        "fit_s": round(fit_s, 3),
        "track_s": round(track_s, 3),
        "streamlines": n_kept,
        "streamlines_per_s": round(rate, 1),
        "s_per_million": round(1e6 / rate, 1),
        "connecting": int(np.triu(counts, 1).sum()),
        "planted_top_fraction": _planted_top_fraction(counts, phantom),
    }


def _planted_top_fraction(counts: np.ndarray, phantom) -> float:
    """Share of the distinct planted parcel pairs found among the same number of strongest edges."""
    from bsym_cli.commands.bench.participant import top_edge_recall

    index = {label: i for i, label in enumerate(phantom.labels)}
    planted = {
        (min(index[a], index[b]), max(index[a], index[b]))
        for a, b in phantom.planted_pairs
        if a != b and a in index and b in index
    }
    return round(top_edge_recall(counts, planted), 3) if planted else float("nan")


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    upper = np.triu_indices_from(a, 1)
    return round(float(spearmanr(a[upper], b[upper]).statistic), 4)


def _run_mrtrix(folder: Path, phantom, wm: np.ndarray, lmax: int, params, threads: int) -> dict:
    """Write the phantom for MRtrix, run response/FOD/tckgen/tck2connectome, return times and counts."""

    def save(data, name):
        nib.save(nib.Nifti1Image(data, phantom.affine), folder / name)
        return str(folder / name)

    dwi, mask = save(phantom.dwi, "dwi.nii.gz"), save(phantom.mask.astype(np.uint8), "mask.nii.gz")
    seeds, atlas = save(wm.astype(np.uint8), "wm.nii.gz"), save(phantom.atlas.astype(np.int32), "atlas.nii.gz")
    grad = folder / "grad.b"  # MRtrix scanner-space table: the phantom's bvecs are world directions
    np.savetxt(grad, np.column_stack([phantom.bvecs, phantom.bvals]), fmt="%.8f")
    common = ["-nthreads", str(threads), "-quiet", "-force"]
    env = {**os.environ, "MRTRIX_RNG_SEED": str(params.seed)}
    started = time.perf_counter()
    _mrtrix(
        ["dwi2response", "tournier", dwi, str(folder / "response.txt"), "-grad", str(grad), "-mask", mask, *common], env
    )
    _mrtrix(
        [
            "dwi2fod",
            "csd",
            dwi,
            str(folder / "response.txt"),
            str(folder / "fod.mif"),
            "-grad",
            str(grad),
            "-mask",
            mask,
            "-lmax",
            str(lmax),
            *common,
        ],
        env,
    )
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    _mrtrix(
        [
            "tckgen",
            str(folder / "fod.mif"),
            str(folder / "tracks.tck"),
            "-algorithm",
            "iFOD2",
            "-seed_image",
            seeds,
            "-mask",
            mask,
            "-select",
            str(params.n_streamlines),
            "-step",
            str(params.step_size),
            "-minlength",
            str(params.min_length),
            "-maxlength",
            str(params.max_length),
            *common,
        ],
        env,
    )
    track_s = time.perf_counter() - started
    _mrtrix(
        [
            "tck2connectome",
            str(folder / "tracks.tck"),
            atlas,
            str(folder / "connectome.csv"),
            "-assignment_radial_search",
            "2",
            "-symmetric",
            "-zero_diagonal",
            *common,
        ],
        env,
    )
    full = np.loadtxt(folder / "connectome.csv", delimiter=",", ndmin=2)
    rows = np.asarray(phantom.labels) - 1  # MRtrix row i is node value i + 1
    counts = np.zeros((len(rows), len(rows)), dtype=np.int64)
    valid = rows < len(full)
    counts[np.ix_(valid, valid)] = full[np.ix_(rows[valid], rows[valid])]
    version = subprocess.run(["tckgen", "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    return {"fit_s": fit_s, "track_s": track_s, "counts": counts, "version": version.strip("= ").split()[-1]}


def _mrtrix(command: list[str], env: dict) -> None:
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise click.ClickException(f"{command[0]} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
