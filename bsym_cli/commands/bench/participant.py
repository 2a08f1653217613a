"""``bsym bench participant``: one whole participant through bsym-app, stage by stage, beside the reference tools.

The participant is the first of a demo study (``bsym demo DIR --size full`` unless DIR already holds one).

* **bsym-app** runs as a user runs it (``bsym-app DIR/bids OUT participant ... --resource-monitor``) into fresh
  output and work folders. Each Nipype step's wall time and peak memory are read from its result file in the
  work folder (Nipype's resource monitor); the time before the first step (start-up, BIDS indexing, atlas) and
  after the last (the model and the derivatives) from the step times and the whole run's wall time.
* **The reference pipeline** does the same stages with the tools a lab would otherwise use, on the same files
  and cores: ``NiftiLabelsMasker`` on the preprocessed BOLD with the atlas in its template space, and MRtrix3
  ``dwidenoise``, ``dwi2mask``, ``dwi2response tournier``, ``dwi2fod csd``, ``dwi2tensor`` and
  ``tensor2metric`` (seeds where FA > the tracker's threshold, as ours), ``tckgen`` (iFOD2 with bsym-app's
  step, length limits and streamline count, at MRtrix3's own angle as in ``bsym bench tractography``) and
  ``tck2connectome``. MRtrix3 gets the atlas that bsym-app placed on the DWI, so it does no registration: that
  part of our time has no counterpart on its side.

Every tool runs in its own process; its wall time and peak resident memory come from ``wait4``. Both
connectomes are scored against the demo's planted tracts (``truth/``): the share of planted region pairs
among the same number of strongest edges.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import click
import numpy as np

from pipelines.defaults import DEFAULT_STREAMLINES

MRTRIX_HINT = (
    "MRtrix3 is not on PATH; install it (Debian/Ubuntu: `apt-get install mrtrix3`, or conda: "
    "`conda install -c mrtrix3 mrtrix3`) to time the reference dMRI stages. Reporting NiftiLabelsMasker alone."
)


@dataclass
class Stage:
    """One timed stage: ``tool`` ran ``name`` in ``wall_s`` seconds with a peak resident memory of ``peak_gb``."""

    tool: str
    name: str
    wall_s: float
    peak_gb: float | None


@dataclass
class Measured:
    """What ``wait4`` tells of one finished process."""

    wall_s: float
    peak_gb: float
    returncode: int


def measure(command: list[str], *, log: Path, env: dict[str, str] | None = None) -> Measured:
    """Run ``command`` to the end, its output appended to ``log``; its wall time and peak RSS (GB).

    The peak is that of the largest process of the tree (the command or a child it waited for).
    """
    with log.open("a") as stream:
        stream.write(f"$ {' '.join(command)}\n")
        stream.flush()
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return Measured(wall_s=wall, peak_gb=usage.ru_maxrss * 1024 / 1e9, returncode=process.returncode)


def run_participant_bench(
    demo: Path,
    folder: Path,
    *,
    streamlines: int = DEFAULT_STREAMLINES,
    nprocs: int = 2,
    use_mrtrix: bool = True,
    app_args: tuple[str, ...] = (),
) -> dict:
    """Run bsym-app and the reference tools on the first participant of the demo study in ``demo``.

    Parameters
    ----------
    demo : Path
        A study written by ``bsym demo`` (``bids/``, ``atlases/``, ``truth/``).
    folder : Path
        Where the benchmark's outputs, work folders and logs go; emptied first.
    streamlines : int
        Streamlines of both tractographies.
    nprocs : int
        Cores for both sides (``--nprocs`` and ``--omp-nthreads``; ``-nthreads`` for MRtrix3).
    use_mrtrix : bool
        Time the MRtrix3 stages when ``tckgen`` is on PATH.
    app_args : tuple of str
        More ``bsym-app`` options (the tests pass small weights).

    Returns
    -------
    dict
        ``participant``, ``inputs`` (BOLD and DWI shapes), ``bsym`` and ``reference`` (lists of
        :class:`Stage` as dicts, the whole run first), ``planted`` (share per side), ``ratio`` (reference wall
        over ours), and ``mrtrix_missing`` when MRtrix3 was not run.
    """
    import nibabel as nib

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    log = folder / "bench.log"
    bids = demo / "bids"
    subject = sorted(p.name for p in bids.glob("sub-*") if p.is_dir())[0]
    out, work = folder / "bsym", folder / "work"
    app = [str(Path(sys.executable).with_name("bsym-app")), str(bids), str(out), "participant"]
    app += ["--participant-label", subject, "--atlas-dataset", str(demo / "atlases"), "-w", str(work)]
    app += ["--nprocs", str(nprocs), "--omp-nthreads", str(nprocs), "--streamlines", str(streamlines)]
    app += ["--resource-monitor", *app_args]
    started = datetime.now(UTC).timestamp()
    whole = measure(app, log=log)
    if whole.returncode:
        raise click.ClickException(f"bsym-app exited {whole.returncode}; see {log}")
    ours = [Stage("bsym-app", "whole participant", whole.wall_s, whole.peak_gb)]
    ours += nipype_stages(work / subject, started, whole.wall_s)

    bold = _one(bids / "derivatives" / "fmriprep" / subject, "**/func/*_desc-preproc_bold.nii.gz")
    mask = _one(bold.parent, bold.name.replace("desc-preproc_bold", "desc-brain_mask"))
    space = _entity(bold.name, "space")
    atlas = _one(demo / "atlases", f"**/tpl-{space}*_dseg.nii.gz")
    dwi = _one(bids / subject, "**/dwi/*_dwi.nii.gz")
    placed = _one(out / subject, "**/dwi/*_space-dwi_*_dseg.nii.gz")
    report: dict = {
        "participant": subject,
        "streamlines": streamlines,
        "nprocs": nprocs,
        "inputs": {"bold": list(nib.load(bold).shape), "dwi": list(nib.load(dwi).shape)},
    }
    reference = [_masker_stage(bold, atlas, mask, log)]
    if use_mrtrix and shutil.which("tckgen"):
        mrtrix, counts = _mrtrix_stages(dwi, placed, folder / "mrtrix", streamlines, nprocs, log)
        reference += mrtrix
    else:
        counts = None
        report["mrtrix_missing"] = MRTRIX_HINT if use_mrtrix else "MRtrix3 skipped (--no-mrtrix)."
    total = sum(stage.wall_s for stage in reference)
    peak = max(stage.peak_gb or 0.0 for stage in reference)
    reference.insert(0, Stage("reference tools", "whole participant (sum)", total, peak))
    report["bsym"] = [asdict(s) for s in ours]
    report["reference"] = [asdict(s) for s in reference]
    report["ratio"] = total / whole.wall_s
    planted = planted_pairs(demo / "truth", subject)
    relmat = _one(out / subject, "**/dwi/*_stat-streamlinecount_relmat.tsv")
    import pandas as pd

    report["planted"] = {"bsym": top_edge_recall(pd.read_csv(relmat, sep="\t", index_col=0).to_numpy(), planted)}
    if counts is not None:
        report["planted"]["mrtrix"] = top_edge_recall(counts, planted)
    return report


def nipype_stages(work: Path, started: float, wall_s: float) -> list[Stage]:
    """Each Nipype step's time and peak memory under ``work``, plus the time before and after the graph.

    ``started`` is when the app was launched (seconds since the epoch); ``wall_s`` its whole run.
    """
    from nipype.utils.filemanip import loadpkl

    stages, first, last = [], None, None
    for result in sorted(work.glob("**/result_*.pklz")):
        loaded = loadpkl(result)
        runtime = getattr(loaded, "runtime", None)
        if runtime is None or not hasattr(runtime, "startTime"):
            continue
        begin, end = (
            datetime.fromisoformat(t).replace(tzinfo=UTC).timestamp() for t in (runtime.startTime, runtime.endTime)
        )
        first = begin if first is None else min(first, begin)
        last = end if last is None else max(last, end)
        workflow = result.parent.parent.name.removesuffix("_wf")
        kind = workflow.split("_")[0] if workflow.split("_")[0] in ("fmri", "dmri") else workflow
        peak = getattr(runtime, "mem_peak_gb", None)
        peak = None if peak is None else float(peak)
        if getattr(loaded.interface, "__module__", "").startswith("nipype.interfaces.utility"):
            continue  # Merge, IdentityInterface: wiring, not a step (still in the graph's first and last times)
        stages.append(Stage("bsym-app", f"{kind}: {result.parent.name}", float(runtime.duration), peak))
    stages.sort(key=lambda s: -s.wall_s)
    if first is not None and last is not None:
        stages.insert(0, Stage("bsym-app", "start-up, inputs, atlas (before the graph)", first - started, None))
        stages.append(Stage("bsym-app", "model and derivatives (after the graph)", started + wall_s - last, None))
    return stages


def top_edge_recall(counts: np.ndarray, planted: set[tuple[int, int]]) -> float:
    """Share of the ``planted`` region pairs (0-based, i < j) among as many strongest edges of ``counts``."""
    upper = np.triu(np.nan_to_num(np.asarray(counts, dtype=float)), 1)
    top = np.argsort(upper, axis=None, kind="stable")[::-1][: len(planted)]
    found = set(zip(*(idx.tolist() for idx in np.unravel_index(top, upper.shape)), strict=True))
    return len(found & planted) / len(planted)


def planted_pairs(truth: Path, subject: str) -> set[tuple[int, int]]:
    """The participant's planted tracts as 0-based region pairs (``truth/`` lists 1-based atlas positions)."""
    params = json.loads((truth / f"{subject}_params.json").read_text())
    pairs = params.get("dwi_tract_indices") or [
        t["indices"] for t in json.loads((truth / "dwi_tracts.json").read_text())["tracts"]
    ]
    return {(min(a, b) - 1, max(a, b) - 1) for a, b in pairs if a != b}


def _masker_stage(bold: Path, atlas: Path, mask: Path, log: Path) -> Stage:
    code = (
        "import sys; from nilearn.maskers import NiftiLabelsMasker; "
        "NiftiLabelsMasker(labels_img=sys.argv[1], mask_img=sys.argv[3], strategy='mean').fit_transform(sys.argv[2])"
    )
    done = measure([sys.executable, "-c", code, str(atlas), str(bold), str(mask)], log=log)
    if done.returncode:
        raise click.ClickException(f"NiftiLabelsMasker failed ({done.returncode}); see {log}")
    return Stage("nilearn NiftiLabelsMasker", "fMRI: parcel means", done.wall_s, done.peak_gb)


def _mrtrix_stages(
    dwi: Path, atlas: Path, folder: Path, streamlines: int, nprocs: int, log: Path
) -> tuple[list[Stage], np.ndarray]:
    """dwidenoise .. tck2connectome on ``dwi``; the stages and the (R, R) streamline counts in atlas order."""
    import nibabel as nib

    from pipelines.dmri.track import TrackingParameters

    folder.mkdir(parents=True)
    params = TrackingParameters(n_streamlines=streamlines)
    bvec, bval = (
        dwi.with_name(dwi.name.replace(".nii.gz", ".bvec")),
        dwi.with_name(dwi.name.replace(".nii.gz", ".bval")),
    )
    grad = ["-fslgrad", str(bvec), str(bval)]
    common = ["-nthreads", str(nprocs), "-quiet", "-force"]
    f = {
        name: str(folder / name)
        for name in (
            "dn.mif",
            "mask.mif",
            "wm.txt",
            "fod.mif",
            "dt.mif",
            "fa.mif",
            "seeds.mif",
            "tracks.tck",
            "counts.csv",
        )
    }
    steps = [
        ("dMRI: denoise", ["dwidenoise", str(dwi), f["dn.mif"], *common]),
        ("dMRI: brain mask", ["dwi2mask", f["dn.mif"], f["mask.mif"], *grad, *common]),
        (
            "dMRI: response",
            ["dwi2response", "tournier", f["dn.mif"], f["wm.txt"], *grad, "-mask", f["mask.mif"], *common],
        ),
        (
            "dMRI: FODs (CSD)",
            ["dwi2fod", "csd", f["dn.mif"], f["wm.txt"], f["fod.mif"], *grad, "-mask", f["mask.mif"], *common],
        ),
        ("dMRI: tensor FA seeds", ["dwi2tensor", f["dn.mif"], f["dt.mif"], *grad, "-mask", f["mask.mif"], *common]),
        ("dMRI: tensor FA seeds", ["tensor2metric", f["dt.mif"], "-fa", f["fa.mif"], *common]),
        (
            "dMRI: tensor FA seeds",
            ["mrthreshold", f["fa.mif"], f["seeds.mif"], "-abs", str(params.fa_threshold), *common],
        ),
        (
            "dMRI: tracking (iFOD2)",
            [
                "tckgen",
                f["fod.mif"],
                f["tracks.tck"],
                "-algorithm",
                "iFOD2",
                "-seed_image",
                f["seeds.mif"],
                "-mask",
                f["mask.mif"],
                "-select",
                str(streamlines),
                "-step",
                str(params.step_size),
                "-minlength",
                str(params.min_length),
                "-maxlength",
                str(params.max_length),
                *common,
            ],
        ),
        (
            "dMRI: connectome",
            ["tck2connectome", f["tracks.tck"], str(atlas), f["counts.csv"], "-symmetric", "-zero_diagonal", *common],
        ),
    ]
    env = {**os.environ, "MRTRIX_RNG_SEED": str(params.seed)}
    stages: dict[str, Stage] = {}
    for name, command in steps:
        done = measure(command, log=log, env=env)
        if done.returncode:
            raise click.ClickException(f"{command[0]} failed ({done.returncode}); see {log}")
        if name in stages:  # several commands make one stage
            stages[name].wall_s += done.wall_s
            stages[name].peak_gb = max(stages[name].peak_gb or 0.0, done.peak_gb)
        else:
            stages[name] = Stage("MRtrix3", name, done.wall_s, done.peak_gb)
    counts = np.loadtxt(f["counts.csv"], delimiter=",", ndmin=2)
    regions = int(np.asarray(nib.load(atlas).dataobj).max())
    full = np.zeros((regions, regions))
    n = min(regions, len(counts))
    full[:n, :n] = counts[:n, :n]  # row i is the label i + 1: the atlas's labels are its 1-based positions
    return list(stages.values()), full


def _one(root: Path, pattern: str) -> Path:
    found = sorted(root.glob(pattern))
    if not found:
        raise click.ClickException(f"no {pattern} under {root}; is it a `bsym demo` study?")
    return found[0]


def _entity(name: str, key: str) -> str:
    return next(part.split("-", 1)[1] for part in name.split("_") if part.startswith(f"{key}-"))


@click.command("participant")
@click.argument("demo", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--size",
    type=click.Choice(["full", "small"]),
    default="full",
    show_default=True,
    help="Size of the one-participant demo built in DEMO when it holds none (see `bsym demo --size`).",
)
@click.option(
    "--streamlines",
    type=click.IntRange(min=100),
    default=DEFAULT_STREAMLINES,
    show_default=True,
    help="Streamlines of both tractographies (bsym-app's default).",
)
@click.option(
    "--nprocs",
    type=click.IntRange(min=1),
    default=min(2, os.cpu_count() or 1),
    show_default=True,
    help="Cores for both sides.",
)
@click.option("--no-mrtrix", is_flag=True, help="Skip MRtrix3 even if tckgen is installed.")
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the measurements to this JSON file.",
)
def participant(demo: Path, size: str, streamlines: int, nprocs: int, no_mrtrix: bool, json_out: Path | None) -> None:
    """One participant through bsym-app, stage by stage, beside NiftiLabelsMasker and MRtrix3."""
    from bsym_cli.commands.bench.model import matmul_rate
    from bsym_cli.commands.demo.study import DemoSettings, build_demo

    if not (demo / "bids").is_dir():
        click.echo(f"building a one-participant {size} demo in {demo} ...")
        build_demo(demo, DemoSettings.of_size(size, participants=1))
    from bsym_cli.commands.templates import lay_out_from_wheels

    lay_out_from_wheels()
    import torch

    torch.set_num_threads(nprocs)
    rate = matmul_rate()
    report = run_participant_bench(
        demo, demo / "bench", streamlines=streamlines, nprocs=nprocs, use_mrtrix=not no_mrtrix
    )
    report["matmul_gflops"] = rate / 1e9
    click.echo(
        f"{report['participant']}: BOLD {report['inputs']['bold']}, DWI {report['inputs']['dwi']}; "
        f"{streamlines} streamlines; {nprocs} core(s); fp32 matmul {rate / 1e9:.0f} GFLOP/s"
    )
    click.echo(f"{'tool':28s} {'stage':52s} {'wall s':>8s} {'peak GB':>8s}")
    for side in ("bsym", "reference"):
        for stage in report[side]:
            peak = "" if stage["peak_gb"] is None else f"{stage['peak_gb']:8.2f}"
            click.echo(f"{stage['tool']:28s} {stage['name']:52s} {stage['wall_s']:8.1f} {peak:>8s}")
    planted = ", ".join(f"{side} {share:.2f}" for side, share in report["planted"].items())
    click.echo(f"reference tools / bsym-app wall time: {report['ratio']:.2f}x; planted-edge share: {planted}")
    if "mrtrix_missing" in report:
        click.echo(report["mrtrix_missing"])
    if json_out:
        json_out.write_text(json.dumps(report, indent=2))
