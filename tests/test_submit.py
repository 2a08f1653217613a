"""``bsym submit``: the SLURM array and group scripts, run with a stub bsym-app and a fake sbatch."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from bsym_cli.cli.tools import main as bsym_main
from bsym_cli.commands.submit import (
    SlurmPlan,
    list_participants,
    slurm_mem_to_mb,
    write_slurm_scripts,
)
from bsym_cli.utils.errors import MissingInputError, NothingSelectedError, OptionError


def run_bsym(*args: str | Path) -> int:
    """Run ``bsym`` in-process; return its exit code."""
    with pytest.raises(SystemExit) as info:
        bsym_main([str(a) for a in args])
    return int(info.value.code or 0)


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def bids(tmp_path: Path) -> Path:
    """A dataset with three participants (folders are all ``bsym submit`` reads)."""
    root = tmp_path / "bids"
    for label in ("10", "02", "01"):
        (root / f"sub-{label}").mkdir(parents=True)
    (root / "sub-notadir").write_text("")
    return root


def test_participants_come_from_folders_or_labels_and_unknown_ones_are_refused(bids: Path, tmp_path: Path):
    assert list_participants(bids) == ("01", "02", "10")
    listing = tmp_path / "subjects.txt"
    listing.write_text("sub-10\n01\n")
    assert list_participants(bids, ["sub-02", str(listing)]) == ("02", "10", "01")
    with pytest.raises(NothingSelectedError, match="sub-07") as info:
        list_participants(bids, ["07"])
    assert info.value.code == 18
    with pytest.raises(MissingInputError):
        list_participants(tmp_path / "absent")


@pytest.mark.parametrize("mem, mb", [("16G", 16384), ("16000M", 16000), ("2T", 2097152), ("512", 512), ("3g", 3072)])
def test_slurm_memory_sizes_convert_to_megabytes_and_a_bare_number_is_mb(mem: str, mb: int):
    assert slurm_mem_to_mb(mem) == mb


def test_bad_memory_size_is_refused():
    with pytest.raises(OptionError, match="16G"):
        slurm_mem_to_mb("16 GB")


def _plan(tmp_path: Path, bids: Path, app: Path, **kwargs) -> SlurmPlan:
    defaults = dict(
        bids_dir=bids,
        output_dir=tmp_path / "out",
        work_dir=tmp_path / "work",
        script_dir=tmp_path / "out" / "logs" / "slurm",
        participants=("01", "02", "10"),
        cpus=3,
        mem="5G",
        time="1-02:00:00",
        app_command=(str(app),),
        app_args=("--skip", "dmri", "--atlas-dataset", "/data/my atlases"),
    )
    return SlurmPlan(**{**defaults, **kwargs})


def _run_task(script: Path, task: int | None, cpus: int = 3) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "SLURM_CPUS_PER_TASK": str(cpus)}
    if task is not None:
        env["SLURM_ARRAY_TASK_ID"] = str(task)
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)


def test_array_task_runs_its_own_participant_with_the_requested_resources(tmp_path: Path, bids: Path):
    argv_file = tmp_path / "argv.txt"
    app = _executable(tmp_path / "fake-bsym-app", f'#!/bin/bash\nprintf "%s\\n" "$@" > {argv_file}\n')
    scripts = write_slurm_scripts(_plan(tmp_path, bids, app))
    assert scripts.participants_file.read_text() == "01\n02\n10\n"
    result = _run_task(scripts.participant_script, task=2)
    assert result.returncode == 0, result.stderr
    assert "array task 2 -> sub-10" in result.stdout
    assert argv_file.read_text().splitlines() == [
        str(bids),
        str(tmp_path / "out"),
        "participant",
        "--participant-label",
        "10",
        "-w",
        str(tmp_path / "work" / "sub-10"),
        "--nprocs",
        "3",
        "--omp-nthreads",
        "1",
        "--mem-mb",
        "5120",
        "--skip",
        "dmri",
        "--atlas-dataset",
        "/data/my atlases",
    ]
    assert (tmp_path / "work" / "sub-10").is_dir()


def test_array_task_beyond_the_list_exits_64_and_runs_nothing(tmp_path: Path, bids: Path):
    app = _executable(tmp_path / "fake-bsym-app", f"#!/bin/bash\ntouch {tmp_path}/ran\n")
    scripts = write_slurm_scripts(_plan(tmp_path, bids, app))
    result = _run_task(scripts.participant_script, task=3)
    assert result.returncode == 64
    assert "line 4" in result.stderr
    assert _run_task(scripts.participant_script, task=None).returncode != 0
    assert not (tmp_path / "ran").exists()


def test_sbatch_headers_carry_every_resource(tmp_path: Path, bids: Path):
    app = _executable(tmp_path / "fake-bsym-app", "#!/bin/bash\n")
    scripts = write_slurm_scripts(
        _plan(
            tmp_path,
            bids,
            app,
            partition="short",
            account="lab7",
            gpus=2,
            max_parallel=2,
            job_name="study9",
            setup_lines=("module load x",),
        )
    )
    lines = scripts.participant_script.read_text().splitlines()
    header = [line for line in lines if line.startswith("#SBATCH")]
    log = tmp_path / "out" / "logs" / "slurm" / "participant-%A_%a.out"
    assert header == [
        "#SBATCH --job-name=study9-participant",
        "#SBATCH --array=0-2%2",
        "#SBATCH --cpus-per-task=3",
        "#SBATCH --mem=5G",
        "#SBATCH --time=1-02:00:00",
        "#SBATCH --partition=short",
        "#SBATCH --account=lab7",
        "#SBATCH --gres=gpu:2",
        f"#SBATCH --output={log}",
    ]
    group = scripts.group_script.read_text()
    assert "#SBATCH --array" not in group and "#SBATCH --job-name=study9-group" in group
    assert " group -w " in group and "--participant-label" not in group
    assert "module load x" in group
    for script in (scripts.participant_script, scripts.group_script, scripts.submit_script):
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def test_submit_sends_the_group_job_after_the_array(tmp_path: Path, bids: Path):
    calls = tmp_path / "sbatch-calls.txt"
    counter = tmp_path / "n"
    sbatch = _executable(
        tmp_path / "sbatch",
        (
            "#!/bin/bash\n"
            f'echo "$*" >> {calls}\n'
            f"n=$(cat {counter} 2>/dev/null || echo 4241); n=$((n + 1)); echo $n > {counter}\n"
            'echo "$n;testcluster"\n'
        ),
    )
    out = tmp_path / "out"
    code = run_bsym(
        "submit",
        bids,
        out,
        "--cpus",
        "2",
        "--mem",
        "3G",
        "--time",
        "45",
        "--submit",
        "--sbatch",
        sbatch,
        "--",
        "--skip",
        "model",
    )
    assert code == 0
    slurm = out / "logs" / "slurm"
    first, second = calls.read_text().splitlines()
    assert first == f"--parsable {slurm / 'bsym-participant.sbatch'}"
    assert second == f"--parsable --dependency=afterok:4242 {slurm / 'bsym-group.sbatch'}"
    assert json.loads((slurm / "jobs.json").read_text()) == {"participant": "4242", "group": "4243"}
    text = (slurm / "bsym-participant.sbatch").read_text()
    assert "#SBATCH --array=0-2\n" in text and "--mem-mb 3072 --skip model" in text


def test_failed_sbatch_is_reported_with_its_message(tmp_path: Path, bids: Path, capsys):
    sbatch = _executable(tmp_path / "sbatch", "#!/bin/bash\necho 'invalid partition specified' >&2\nexit 1\n")
    code = run_bsym("submit", bids, tmp_path / "out", "--submit", "--sbatch", sbatch)
    assert code == 64
    assert "invalid partition specified" in capsys.readouterr().err


def test_container_jobs_bind_the_data_and_pass_gpus(tmp_path: Path, bids: Path):
    image = tmp_path / "bsym.sif"
    image.write_bytes(b"sif")
    out, work = tmp_path / "out", tmp_path / "scratch"
    assert (
        run_bsym(
            "submit",
            bids,
            out,
            "-w",
            work,
            "--container",
            image,
            "--gpus",
            "1",
            "-B",
            "/data/atlases:/atlases:ro",
            "--no-group",
        )
        == 0
    )
    text = (out / "logs" / "slurm" / "bsym-participant.sbatch").read_text()
    assert (
        f"exec apptainer run --cleanenv -B {bids}:{bids}:ro -B {out} -B {work} "
        "-B /data/atlases:/atlases:ro "
        f"--nv {image} {bids} {out} participant"
    ) in text
    assert "#SBATCH --gres=gpu:1" in text
    assert not (out / "logs" / "slurm" / "bsym-group.sbatch").exists()
    assert "bsym-group" not in (out / "logs" / "slurm" / "submit.sh").read_text()


@pytest.mark.parametrize(
    "args, code",
    [
        (["--time", "two hours"], 64),
        (["--mem", "lots"], 64),
        (["--container", "{tmp}/missing.sif"], 66),
        (["--participant-label", "99"], 18),
        (["--cpus", "0"], 2),
    ],
)
def test_bad_options_exit_with_their_codes(tmp_path: Path, bids: Path, args: list[str], code: int):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert run_bsym("submit", bids, tmp_path / "out", *args) == code
