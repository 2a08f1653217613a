"""``bsym demo DIR``: build the simulated demo study."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click


@click.command("demo")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--participants", type=click.IntRange(1, 999), default=8, show_default=True, help="Number of participants."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same files).")
@click.option(
    "--size",
    type=click.Choice(["small", "full"]),
    default="small",
    show_default=True,
    help="small: 4 mm BOLD (300 volumes) and 3 mm DWI (32 directions), a participant in a minute or two; full: "
    "2 mm BOLD (400 volumes, TR 0.8 s) and 2 mm DWI (64 directions + 8 b0), the size of a real acquisition.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing demo study in DIRECTORY.")
@click.option(
    "--check",
    is_flag=True,
    help="Build nothing: compare bsym-app's outputs on the demo in DIRECTORY with its ground truth (exit 1 if "
    "a stage is off).",
)
@click.option(
    "--outputs",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --check: bsym-app's output folder (default DIRECTORY/bids/derivatives/bsym).",
)
@click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --check: bsym-app's work folder, for the identifiability check (default DIRECTORY/work).",
)
def demo(
    directory: Path,
    participants: int,
    seed: int,
    size: str,
    overwrite: bool,
    check: bool,
    outputs: Path | None,
    work: Path | None,
) -> None:
    """Build a small simulated study in DIRECTORY: raw BIDS, fMRIPrep derivatives, atlas and ground truth.

    Writes DIRECTORY/bids (with derivatives/fmriprep), DIRECTORY/atlases and DIRECTORY/truth. With --check,
    compares a finished run's outputs with that truth instead (docs/demo.md).
    """
    if check:
        _check(directory, outputs, work)
        return
    from bsym_cli.commands.demo.study import DemoSettings, build_demo

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("bsym").setLevel(logging.INFO)
    start = time.perf_counter()
    settings = DemoSettings.of_size(size, participants=participants, seed=seed)
    study = build_demo(directory, settings, overwrite=overwrite)
    inodes = {(p.stat().st_dev, p.stat().st_ino): p.stat().st_size for p in study.files}  # hard links once
    size_mb = sum(inodes.values()) / 1e6
    click.echo(f"Wrote {len(study.files)} files ({size_mb:.0f} MB) in {time.perf_counter() - start:.0f} s:")
    click.echo(f"  raw BIDS          {study.bids_dir}")
    click.echo(f"  fMRIPrep outputs  {study.fmriprep_dir}")
    click.echo(f"  atlas dataset     {study.atlas_dir}")
    click.echo(f"  ground truth      {study.truth_dir}")
    from bsym_cli.commands.templates import lay_out_from_wheels

    click.echo(f"  template          {lay_out_from_wheels()[0]}")
    click.echo(study.participants.to_string(index=False))


def _check(directory: Path, outputs: Path | None, work: Path | None) -> None:
    from bsym_cli.commands.demo.checks import check_demo
    from bsym_cli.utils.errors import BsymError

    results = check_demo(directory, outputs, work)
    click.echo(f"Checks of the demo in {directory} against its ground truth ({directory / 'truth'}):")
    for result in results:
        click.echo(f"  {result}")
    failed = [r.stage for r in results if r.passed is False]
    if failed:
        raise BsymError(
            f"Demo check failed for {', '.join(failed)}: the outputs do not match the simulated truth. See the "
            "lines above, and the participant reports (sub-*.html) and logs in the output folder."
        )
