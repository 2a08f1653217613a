"""``bsym bench``: speed and memory, always as ratios against a reference measured in the same run."""

from __future__ import annotations

import click

from bsym_cli.cli.tools import LazyGroup

BENCHES = {
    "model": ("bsym_cli.commands.bench.model", "model", "BrainSymphony throughput, memory, efficiency, bf16."),
    "participant": (
        "bsym_cli.commands.bench.participant",
        "participant",
        "One participant, stage by stage, vs NiftiLabelsMasker and MRtrix3.",
    ),
    "parcellation": ("bsym_cli.commands.bench.parcellation", "parcellation", "Parcel means vs NiftiLabelsMasker."),
    "tractography": ("bsym_cli.commands.bench.tractography", "tractography", "DIPY tracking vs MRtrix3 tckgen."),
}


@click.group(cls=LazyGroup, lazy=BENCHES)
def bench() -> None:
    """Measure speed and memory; every figure is reported beside a reference from the same run."""
