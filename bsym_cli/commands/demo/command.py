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
@click.option("--overwrite", is_flag=True, help="Replace an existing demo study in DIRECTORY.")
def demo(directory: Path, participants: int, seed: int, overwrite: bool) -> None:
    """Build a small simulated study in DIRECTORY: raw BIDS, fMRIPrep derivatives, atlas and ground truth.

    Writes DIRECTORY/bids (with derivatives/fmriprep), DIRECTORY/atlases and DIRECTORY/truth.
    """
    from bsym_cli.commands.demo.study import DemoSettings, build_demo

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("bsym").setLevel(logging.INFO)
    start = time.perf_counter()
    study = build_demo(directory, DemoSettings(participants=participants, seed=seed), overwrite=overwrite)
    inodes = {(p.stat().st_dev, p.stat().st_ino): p.stat().st_size for p in study.files}  # hard links once
    size_mb = sum(inodes.values()) / 1e6
    click.echo(f"Wrote {len(study.files)} files ({size_mb:.0f} MB) in {time.perf_counter() - start:.0f} s:")
    click.echo(f"  raw BIDS          {study.bids_dir}")
    click.echo(f"  fMRIPrep outputs  {study.fmriprep_dir}")
    click.echo(f"  atlas dataset     {study.atlas_dir}")
    click.echo(f"  ground truth      {study.truth_dir}")
    from bsym_cli.commands.templates import lay_out_from_wheels

    click.echo(f"  template          {lay_out_from_wheels()}")
    click.echo(study.participants.to_string(index=False))
