"""``bsym bench parcellation`` on a small grid: it reports both timings, the ratio and agreeing numbers."""

import json

from click.testing import CliRunner

from bsym_cli.commands.bench.parcellation import parcellation


def test_bench_reports_both_formats_and_agreement(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        parcellation,
        ["--volumes", "4", "--voxel-size", "8", "--work-dir", str(tmp_path / "run"), "--json-out", str(out)],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["grid"] == [23, 27, 23] and report["volumes"] == 4
    for row in report["formats"].values():
        assert row["max_rel_diff"] < 1e-5
        assert row["ratio"] == row["masker_s"] / row["bsym_s"]
    assert "ratio" in result.output and "NiftiLabelsMasker" in result.output
