"""``bsym weights``: convert the authors' release into a bundle and inspect bundles."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def weights() -> None:
    """Import, inspect and verify weight bundles."""


@weights.command("import-official")
@click.argument("src_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--name", default="brainsymphony-official", show_default=True, help="Bundle name.")
@click.option("--atlas", default="Schaefer400Tian450", show_default=True, help="Atlas label of the weights.")
@click.option("--labels-sha256", default=None, help="sha256 of the atlas labels TSV fixing region order.")
@click.option("--tr", type=float, default=None, help="Repetition time (s) the weights expect, if known.")
@click.option("--allow-partial", is_flag=True, help="Accept an incomplete functional set (testing only).")
def import_official_command(
    src_dir: Path,
    out: Path,
    name: str,
    atlas: str,
    labels_sha256: str | None,
    tr: float | None,
    allow_partial: bool,
) -> None:
    """Convert the BrainSymphony release in SRC_DIR into a bundle OUT (folder, or .tar)."""
    from brainsymphony import import_official, save_bundle
    from brainsymphony.official import official_provenance

    model = import_official(src_dir, allow_partial=allow_partial)
    files = official_provenance(src_dir)
    notes = ["region order: Tian S3 subcortex 1-50, Schaefer-400 7-network 51-450 (assumed)"]
    if model.gate is not None:
        notes.append("fusion gate not in the release: neutral (g = 0.5, fused = mean of the two streams)")
    missing = sorted({"spatial", "temporal", "context", "fusion"} - set(files)) if model.spatial else []
    if missing:
        notes.append(f"random (untrained) parts: {', '.join(missing)}")
    metadata = save_bundle(
        model,
        out,
        name=name,
        atlas=atlas,
        labels_sha256=labels_sha256,
        tr=tr,
        licence="Apache-2.0 (BrainSymphony authors)",
        source="BrainSymphony official release (arXiv 2506.18314); "
        + ", ".join(f"{k}.pth sha256 {v}" for k, v in sorted(files.items())),
        training="authors' self-supervised pretraining (arXiv 2506.18314); scaling statistics not published",
        notes=notes,
    )
    click.echo(f"wrote {out} ({metadata.mode}, weights sha256 {metadata.sha256})")


@weights.command("info")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
def info(path: Path) -> None:
    """Print a bundle's data contract and provenance after verifying its weights' sha256."""
    from brainsymphony.bundle import read_bundle_metadata

    click.echo(read_bundle_metadata(path).describe())
