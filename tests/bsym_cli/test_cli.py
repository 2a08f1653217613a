"""The bsym-app command line: option parsing, configuration precedence, paths and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bsym_cli.cli.labels import expand_multi_value_options, parse_name_path_pairs, read_labels
from bsym_cli.cli.options import OPTIONS, help_sections, multi_value_spellings
from pipelines.defaults import DEFAULT_STREAMLINES
from tests.bsym_cli.conftest import run_app
from tests.data.bids import make_dataset

MULTI_VALUE = multi_value_spellings()


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "bids", subjects=("01", "02"))


def test_multi_value_options_are_expanded_like_argparse_nargs_plus():
    argv = [
        "in",
        "out",
        "participant",
        "--participant-label",
        "01",
        "sub-02",
        "-t",
        "rest",
        "--skip",
        "dmri",
        "model",
        "--nprocs",
        "2",
    ]
    assert expand_multi_value_options(argv, MULTI_VALUE) == [
        "in",
        "out",
        "participant",
        "--participant-label",
        "01",
        "--participant-label",
        "sub-02",
        "-t",
        "rest",
        "--skip",
        "dmri",
        "--skip",
        "model",
        "--nprocs",
        "2",
    ]
    assert expand_multi_value_options(["--participant_label=03"], MULTI_VALUE) == ["--participant_label", "03"]


def test_labels_strip_prefix_deduplicate_and_read_files(tmp_path: Path):
    listing = tmp_path / "subjects.txt"
    listing.write_text("participant_id\nsub-07\n08\n\n# comment\n")
    assert read_labels(("sub-01", "02", "01", str(listing)), "sub-") == ["01", "02", "07", "08"]
    assert read_labels(("ses-pre", "post"), "ses-") == ["pre", "post"]


def test_derivatives_pairs_parse_and_reject_empty_names():
    pairs = parse_name_path_pairs(("fmriprep=/d/fp", "/d/qsiprep"), "--derivatives")
    assert pairs == {"fmriprep": Path("/d/fp"), "qsiprep": Path("/d/qsiprep")}
    with pytest.raises(Exception, match="NAME=PATH"):
        parse_name_path_pairs(("=/x",), "--derivatives")


def test_help_is_fast_and_lists_groups_and_exit_codes():
    code = (
        "import sys\nfrom bsym_cli.cli import app\n"
        "try:\n    app.main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "print(sorted(m for m in ('torch', 'nilearn', 'dipy', 'nipype', 'bids') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
    for section in ("Filtering:", "Performance:", "Workflow:", "Outputs and other:", "Exit codes:", "73"):
        assert section in out


def test_version(capsys):
    from bsym_cli import __version__

    assert run_app("--version") == 0
    assert __version__ in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, code",
    [
        ([], 2),  # missing arguments
        (["{bids}", "{out}", "participant", "--no-such-option"], 2),
        (["{bids}", "{bids}", "participant"], 64),  # OUTPUT_DIR is BIDS_DIR
        (["{bids}", "{bids}/sub-01/out", "participant"], 64),  # inside the raw tree
        (["{bids}", "{out}", "participant", "-w", "{bids}/work"], 64),  # work dir inside BIDS_DIR
        (["{bids}", "{out}", "participant", "--min-coverage", "1.5"], 64),
        (["{bids}", "{out}", "participant", "--denoise-strategy", "aggressive"], 64),
        (["{bids}", "{out}", "participant", "--nprocs", "zero"], 64),
        (["{bids}", "{out}", "participant", "--low-pass", "0.01", "--high-pass", "0.1"], 64),
        (["{bids}", "{out}", "participant", "--mem", "lots"], 64),
        (["{bids}", "{out}", "participant", "--participant-label", "99"], 18),
        (["{bids}", "{out}", "participant", "--participant-label", "01", "-t", "nback", "--skip", "dmri"], 18),
        (["{bids}", "{out}", "participant", "-d", "fmriprep={tmp}/nowhere"], 66),
        (["{tmp}/missing", "{out}", "participant"], 66),
        (["{bids}", "{tmp}/a_file/out", "participant"], 73),
        (["{tmp}/a_dir", "{out}", "participant"], 16),  # no dataset_description.json
    ],
)
def test_exit_codes(tiny: Path, tmp_path: Path, argv: list[str], code: int):
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "a_dir").mkdir()
    fill = {"bids": tiny, "out": tmp_path / "out", "tmp": tmp_path}
    args = [a.format(**fill) for a in argv]
    if args and "-w" not in args:
        args += ["-w", str(tmp_path / "work")]
    assert run_app(*args) == code


def test_no_fmriprep_derivatives_exits_66_and_names_the_fix(tmp_path: Path, capsys):
    bids = make_dataset(tmp_path / "bids", subjects=("01",), fmriprep=False)
    assert run_app(bids, tmp_path / "out", "participant", "-w", tmp_path / "work") == 66
    err = capsys.readouterr().err
    assert "-d fmriprep=" in err and "--skip fmri" in err


def test_bad_file_names_exit_16_unless_validation_is_skipped(tiny: Path, tmp_path: Path, capsys):
    (tiny / "sub-01" / "func" / "sub-01_notbids.txt").write_text("x")
    assert run_app(tiny, tmp_path / "out", "participant", "-w", tmp_path / "w", "--skip", "fmri", "dmri", "model") == 16
    assert "sub-01_notbids.txt" in capsys.readouterr().err


def test_output_inside_derivatives_is_accepted(tiny: Path, tmp_path: Path):
    from bsym_cli.cli.app import cli, config_from_params

    ctx = cli.make_context(
        "bsym-app", [str(tiny), str(tiny / "derivatives" / "bsym"), "participant", "-w", str(tmp_path / "w")]
    )
    config = config_from_params(ctx, ctx.params)
    assert config.execution.output_dir == tiny / "derivatives" / "bsym"


def _config(tmp_path: Path, bids: Path, *extra: str):
    from bsym_cli.cli.app import cli, config_from_params

    argv = expand_multi_value_options(
        [str(bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "w"), *extra], MULTI_VALUE
    )
    ctx = cli.make_context("bsym-app", argv)
    return config_from_params(ctx, ctx.params)


def test_config_precedence_defaults_then_file_then_flags(tiny: Path, tmp_path: Path):
    toml = tmp_path / "c.toml"
    toml.write_text('[workflow]\nmin_coverage = 0.3\ndenoise_strategy = "compcor"\n[resources]\nnprocs = 3\n')
    config = _config(tmp_path, tiny, "--config-file", str(toml), "--min-coverage", "0.4")
    assert config.workflow.min_coverage == 0.4  # flag beats file
    assert config.workflow.denoise_strategy == "compcor"  # file beats default
    assert config.resources.nprocs == 3
    assert config.workflow.streamlines == DEFAULT_STREAMLINES  # default
    with pytest.raises(Exception) as info:
        config.workflow.min_coverage = 0.9
    assert "frozen" in str(info.value).lower()


def test_dumped_config_reproduces_the_run(tiny: Path, tmp_path: Path):
    from bsym_cli.cli.config import dump_config

    first = _config(
        tmp_path,
        tiny,
        "--participant-label",
        "01",
        "--denoise-strategy",
        "scrubbing",
        "--skip",
        "dmri",
        "--mem",
        "6000MB",
        "--seed",
        "7",
    )
    (dumped,) = dump_config(first, tmp_path / "dump")
    again = _config(tmp_path, tiny, "--config-file", str(dumped))
    assert again.hash == first.hash
    same = {"execution": {"run_uuid"}}
    assert again.model_dump(exclude=same) == first.model_dump(exclude=same)
    assert again.resources.mem_gb == pytest.approx(6.0)
    assert again.execution.run_uuid != first.execution.run_uuid
    changed = _config(tmp_path, tiny, "--config-file", str(dumped), "--seed", "8")
    assert changed.hash != first.hash  # the seed is scientific
    faster = _config(tmp_path, tiny, "--config-file", str(dumped), "--nprocs", "2")
    assert faster.hash == first.hash  # resources are not


def test_bids_filter_file_and_plugin_file_are_checked(tiny: Path, tmp_path: Path):
    good = tmp_path / "filters.json"
    good.write_text(json.dumps({"bold": {"task": "rest", "run": None}}))
    config = _config(tmp_path, tiny, "--bids-filter-file", str(good))
    assert config.execution.bids_filters == {"bold": {"task": "rest", "run": None}}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"bolt": {}}))
    assert run_app(tiny, tmp_path / "out", "participant", "--bids-filter-file", bad) == 64
    plugin = tmp_path / "plugin.yml"
    plugin.write_text("plugin: SLURM\nplugin_args:\n  sbatch_args: --time=1:00:00\n")
    config = _config(tmp_path, tiny, "--nipype-plugin-file", str(plugin))
    assert config.nipype.plugin == "SLURM" and config.nipype.plugin_args["sbatch_args"] == "--time=1:00:00"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits; a file-as-folder case covers 73")
def test_unwritable_output_dir_exits_73(tiny: Path, tmp_path: Path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert run_app(tiny, locked / "out", "participant", "-w", tmp_path / "w") == 73


def test_every_path_option_is_absolute_from_flags_and_the_config_file(tiny: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    toml = tmp_path / "c.toml"
    toml.write_text(
        '[execution]\nwork_dir = "scratch/w"\nbids_database_dir = "db"\n'
        '[workflow]\natlas_dataset = "atlases"\n[model]\nweights = "~/bundle"\n'
    )
    from bsym_cli.cli.app import cli, config_from_params

    argv = expand_multi_value_options(
        [
            os.path.relpath(tiny),
            "out",
            "participant",
            "--config-file",
            "c.toml",
            "--head",
            "heads/a",
            "-d",
            "fmriprep=bids/derivatives/fmriprep",
        ],
        MULTI_VALUE,
    )
    ctx = cli.make_context("bsym-app", argv)
    config = config_from_params(ctx, ctx.params)
    ex, model = config.execution, config.model
    assert ex.work_dir == tmp_path / "scratch" / "w" and ex.bids_database_dir == tmp_path / "db"
    assert ex.output_dir == tmp_path / "out" and ex.bids_dir == tiny
    assert ex.derivatives == {"fmriprep": tmp_path / "bids" / "derivatives" / "fmriprep"}
    assert config.workflow.atlas_dataset == tmp_path / "atlases"
    assert model.weights == Path.home() / "bundle" and model.heads == (tmp_path / "heads" / "a",)


def test_a_label_is_a_label_even_when_a_file_has_its_name(tmp_path: Path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "01").write_text("02\n03\n")
    (tmp_path / "list.txt").write_text("04\n")
    assert read_labels(("01", "list.txt"), "sub-") == ["01", "04"]
    assert "'01' is read as a label" in caplog.text
    assert read_labels(("./01",), "sub-") == ["02", "03"]


@pytest.mark.parametrize(
    "description",
    [
        {"Name": "fMRIPrep outputs", "DatasetType": "derivative", "GeneratedBy": [{"Name": "fMRIPrep"}]},
        {"Name": "raw", "BIDSVersion": "1.10.0", "DatasetType": "raw"},
    ],
)
def test_output_dir_holding_another_dataset_is_refused(tiny: Path, tmp_path: Path, description, capsys):
    out = tmp_path / "other"
    out.mkdir()
    (out / "dataset_description.json").write_text(json.dumps(description))
    assert run_app(tiny, out, "participant", "-w", tmp_path / "w") == 64
    assert "already holds" in capsys.readouterr().err
    assert json.loads((out / "dataset_description.json").read_text()) == description
    given = tiny / "derivatives" / "fmriprep"
    assert run_app(tiny, given / "bsym", "participant", "-w", tmp_path / "w", "-d", f"fmriprep={given}") == 64


def test_every_option_is_declared_once_and_help_defaults_come_from_the_configuration():
    from bsym_cli.cli.app import cli
    from bsym_cli.cli.config import ModelConfig, WorkflowConfig

    spellings = [flag for option in OPTIONS for flag in option.flags]
    assert len(spellings) == len(set(spellings))
    listed = [name for names in help_sections().values() for name in names]
    assert sorted(listed) == sorted([p.name for p in cli.params if p.param_type_name == "option"] + ["help"])
    text = subprocess.run(
        [sys.executable, "-m", "bsym_cli.cli.app", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    ).stdout
    assert f"[default: {WorkflowConfig.model_fields['streamlines'].default}]" in text
    assert f"[default: {WorkflowConfig.model_fields['seed'].default}]" in text
    assert "--scaling {" + ",".join(ModelConfig.model_fields["scaling"].annotation.__args__) + "}" in text


@pytest.mark.parametrize(
    "flags, gb",
    [
        (["--mem", "16000"], 16.0),  # a bare number is MB, as a scheduler gives it
        (["--mem", "16GB"], 16.0),
        (["--mem", "16000MB"], 16.0),
        (["--mem", "2G"], 2.0),
        (["--mem-mb", "8000"], 8.0),
        (["--mem-gb", "3"], 3.0),
    ],
)
def test_memory_flags_as_nipreps_users_type_them(tiny: Path, tmp_path: Path, flags, gb):
    assert _config(tmp_path, tiny, *flags).resources.mem_gb == pytest.approx(gb)


def test_nipreps_spellings_are_aliases(tiny: Path, tmp_path: Path):
    plugin = tmp_path / "plugin.yml"
    plugin.write_text("plugin: Linear\nplugin_args: {}\n")
    given = _config(
        tmp_path,
        tiny,
        *["--session-id", "a", "--random-seed", "7", "--lower-bpf", "0.01", "--upper-bpf", "0.1"],
        *["--datasets", f"fmriprep={tiny / 'derivatives' / 'fmriprep'}", "--use-plugin", str(plugin)],
    )
    assert given.execution.session_label == ("a",) and given.workflow.seed == 7
    assert (given.workflow.high_pass, given.workflow.low_pass) == (0.01, 0.1)
    assert given.execution.derivatives["fmriprep"] == tiny / "derivatives" / "fmriprep"
    assert given.nipype.plugin == "Linear"


def test_process_and_thread_defaults_follow_the_machine(tiny: Path, tmp_path: Path, monkeypatch):
    import os

    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    cpus = len(os.sched_getaffinity(0))
    config = _config(tmp_path, tiny)
    assert config.resources.nprocs == cpus
    assert config.resources.omp_nthreads == max(1, min(cpus - 1 if cpus > 1 else cpus, 8))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")  # a SLURM task's allocation is honoured
    assert _config(tmp_path, tiny).resources.nprocs == 1
    assert _config(tmp_path, tiny, "--nprocs", "3").resources.omp_nthreads == 2
    assert _config(tmp_path, tiny, "--nprocs", "3", "--omp-nthreads", "4").resources.omp_nthreads == 4


def test_cgroup_quota_caps_the_cpus(monkeypatch, tmp_path: Path):
    from bsym_cli.utils import machine

    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # 1.5 CPUs -> 2
    monkeypatch.setattr(machine, "CGROUP_V2", quota)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert machine.available_cpus({}) == 2
    quota.write_text("max 100000\n")
    assert machine.available_cpus({}) == 16
    assert machine.available_cpus({"SLURM_CPUS_PER_TASK": "4"}) == 4
