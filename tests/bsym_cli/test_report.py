"""The participant report as a QC reviewer reads it: sections found by parsing the HTML, not by screenshots."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bsym_cli.bids.atlases import write_atlas_dataset
from bsym_cli.commands.demo.study import DemoSettings, build_demo
from tests.bsym_cli.conftest import run_app
from tests.bsym_cli.test_reruns import bsym_app
from tests.data.bids import make_dataset


class Sections(HTMLParser):
    """Section names (h1), group titles (h2) and the figure files of a nireports report."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.groups: list[str] = []
        self.figures: list[str] = []
        self._open: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("h1", "h2"):
            self._open = self.sections if tag == "h1" else self.groups
            self._open.append("")
        if tag == "img" and attrs.get("src", "").endswith(".svg"):
            self.figures.append(attrs["src"])
        if tag == "object" and attrs.get("data", "").endswith(".svg"):
            self.figures.append(attrs["data"])

    def handle_endtag(self, tag):
        if tag in ("h1", "h2"):
            self._open = None

    def handle_data(self, data):
        if self._open is not None:
            self._open[-1] += data


def parse(path: Path) -> Sections:
    parser = Sections()
    parser.feed(path.read_text())
    parser.sections = [" ".join(s.split()) for s in parser.sections]
    parser.groups = [" ".join(s.split()) for s in parser.groups]
    return parser


def colour_range(report: Path, figure: str) -> tuple[float, float]:
    """The colour range written on the root of a report's SVG figure."""
    root = ET.parse(report.parent / figure).getroot()
    return float(root.attrib["data-vmin"]), float(root.attrib["data-vmax"])


def _toy_atlas(root: Path, reference: Path) -> Path:
    """Four box regions on the grid of ``reference``, as an atlas dataset."""
    img = nib.load(reference)
    labels = np.zeros(img.shape[:3], np.int16)
    labels[1:6, 1:7, 1:4], labels[1:6, 1:7, 4:8] = 1, 2
    labels[1:3, 1:3, 1:8], labels[4:6, 5:7, 1:8] = 3, 4
    table = pd.DataFrame({"index": [1, 2, 3, 4], "name": ["A", "B", "C", "D"]})
    write_atlas_dataset(
        root, atlas="Toy", template="MNI152NLin6Asym", dseg_img=nib.Nifti1Image(labels, img.affine), table=table
    )
    return root


def test_one_report_covers_every_session_with_about_and_errors(tmp_path: Path):
    bids = make_dataset(tmp_path / "bids", subjects=("01",), sessions=("a", "b"), dwi=False)
    bold = next((bids / "derivatives" / "fmriprep").rglob("*_desc-preproc_bold.nii.gz"))
    atlases = _toy_atlas(tmp_path / "atlases", bold)
    out = tmp_path / "out"
    args = [bids, out, "participant", "--skip", "dmri", "model", "--atlas", "Toy", "--atlas-dataset", atlases]
    assert run_app(*args, "-w", tmp_path / "work") == 0
    report = parse(out / "sub-01.html")
    assert {"Summary", "Functional", "About", "Errors", "Methods"} <= set(report.sections)
    assert "Reports for: session a." in report.groups and "Reports for: session b." in report.groups
    text = (out / "sub-01.html").read_text()
    assert "No errors to report!" in text and "Configuration hash" in text
    assert "sub-01_ses-a_task-rest" in text and "sub-01_ses-b_task-rest" in text  # not the last session only
    figures = sorted(Path(f).name for f in report.figures)
    assert "sub-01_ses-a_task-rest_desc-connectivity_bold.svg" in figures
    assert "sub-01_ses-b_task-rest_desc-connectivity_bold.svg" in figures
    for figure in report.figures:  # the figures are files beside the report, in sub-01/figures/
        assert figure.startswith("./sub-01/figures/") and (out / figure).stat().st_size > 1000


def test_attention_maps_use_a_colour_range_that_shows_contrast(study):
    path = study["out"] / "sub-01.html"
    report = parse(path)
    assert "Model" in report.sections
    (attention,) = [f for f in report.figures if "desc-incomingattention" in f]
    vmin, vmax = colour_range(path, attention)  # incoming attention, in % of the uniform level 1/R
    assert vmin == -vmax and 0 < vmax < 100  # the parcels' own spread, not 0 to the maximum
    assert "relative to the uniform level 1/R = 1/450" in (path.parent / attention).read_text()


def test_demo_weights_on_a_real_dataset_are_flagged_at_start_in_the_report_and_sidecars(tmp_path: Path):
    root = tmp_path / "study"
    build_demo(root, DemoSettings(participants=1, seed=3, n_frames=160, n_dummy=2, n_directions=12, n_b0=2))
    description = root / "bids" / "dataset_description.json"
    data = json.loads(description.read_text())
    data["GeneratedBy"] = [g for g in data["GeneratedBy"] if g["Name"] != "bsym demo"]  # a user's own dataset
    description.write_text(json.dumps(data))
    out = "bids/derivatives/bsym"
    result = bsym_app(root, "bids", out, "participant", "--atlas-dataset", "atlases", "-w", "work", "--skip", "dmri")
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"demo bundle 'bsym-demo-sim'.*not scientifically meaningful", result.stderr)
    assert "bsym weights import-official" in result.stderr
    assert "not scientifically meaningful" in (root / out / "sub-01.html").read_text()
    features = json.loads((root / out / "sub-01/model/sub-01_desc-bsym_features.json").read_text())
    assert "not scientifically meaningful" in features["Warning"]
