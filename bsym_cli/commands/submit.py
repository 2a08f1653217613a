"""``bsym submit BIDS_DIR OUTPUT_DIR``: a SLURM array (one participant per task), then a dependent group job.

Writes, into ``--script-dir`` (default ``OUTPUT_DIR/logs/slurm``):

* ``participants.txt``: one label per line; array task ``i`` runs line ``i + 1``;
* ``bsym-participant.sbatch``: the array job, resources from the options;
* ``bsym-group.sbatch``: the group job;
* ``submit.sh``: submits both, the group job with ``--dependency=afterok:<array job id>``.

With ``--submit`` the two jobs are submitted now (``sbatch --parsable``) and their ids written to
``jobs.json``. Every task uses its own work directory (``<work>/sub-<label>``), so tasks never share
Nipype's cache or the pybids index; a rerun of a task reuses its work directory and skips finished work.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click

from bsym_cli import __version__
from bsym_cli.cli.labels import read_labels
from bsym_cli.utils.errors import MissingInputError, NothingSelectedError, OptionError

_SLURM_TIME = re.compile(r"\d+(:\d{1,2}){0,2}|\d+-\d+(:\d{1,2}){0,2}")
_SLURM_MEM = re.compile(r"(\d+)([KMGT]?)", re.IGNORECASE)
_MB_PER_UNIT = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}


@dataclass(frozen=True, kw_only=True)
class SlurmPlan:
    """Everything one submission needs; paths are absolute.

    Attributes
    ----------
    bids_dir, output_dir, work_dir, script_dir : Path
        Input dataset, output dataset, parent of the per-task work directories, where scripts and logs go.
    participants : tuple of str
        Labels without ``sub-``; array task ``i`` runs ``participants[i]``.
    cpus : int
        CPUs per task (``--cpus-per-task``); also bsym-app's ``--nprocs``.
    omp_nthreads : int
        bsym-app's ``--omp-nthreads``.
    mem : str
        SLURM memory per task (``16G``); bsym-app gets the same amount (``--mem-mb``).
    time : str
        SLURM time limit per task (``12:00:00``).
    partition, account : str or None
        SLURM partition and account.
    gpus : int
        GPUs per task (``--gres=gpu:N``; the container is run with ``--nv``).
    max_parallel : int or None
        Array throttle (``%N``).
    job_name : str
        Prefix of both job names.
    app_command : tuple of str
        How to start bsym-app: the local install, or ``apptainer run --cleanenv ... IMAGE``.
    setup_lines : tuple of str
        Shell lines run first in each job (e.g. ``module load apptainer``).
    group : bool
        Also write (and submit) the group job.
    app_args : tuple of str
        Extra bsym-app arguments (after ``--``), given to the participant and group runs.
    """

    bids_dir: Path
    output_dir: Path
    work_dir: Path
    script_dir: Path
    participants: tuple[str, ...]
    cpus: int = 4
    omp_nthreads: int = 1
    mem: str = "16G"
    time: str = "12:00:00"
    partition: str | None = None
    account: str | None = None
    gpus: int = 0
    max_parallel: int | None = None
    job_name: str = "bsym"
    app_command: tuple[str, ...] = ("bsym-app",)
    setup_lines: tuple[str, ...] = ()
    group: bool = True
    app_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class SlurmScripts:
    """Paths of the files written by :func:`write_slurm_scripts`."""

    participants_file: Path
    participant_script: Path
    group_script: Path | None
    submit_script: Path


def list_participants(bids_dir: Path, requested: tuple[str, ...] | list[str] = ()) -> tuple[str, ...]:
    """Participants to submit: ``requested`` (labels or files of labels), else every ``sub-*`` folder.

    Parameters
    ----------
    bids_dir : Path
        The BIDS dataset root.
    requested : sequence of str
        ``--participant-label`` values (``01``, ``sub-01`` or a file with one label per line).

    Returns
    -------
    tuple of str
        Labels without ``sub-``, in the order given (or sorted when taken from the folders).

    Raises
    ------
    MissingInputError
        ``bids_dir`` does not exist (exit 66).
    NothingSelectedError
        No participant, or a requested one has no folder in ``bids_dir`` (exit 18).
    """
    if not bids_dir.is_dir():
        raise MissingInputError(f"BIDS_DIR {bids_dir} does not exist; check the path.")
    present = sorted(p.name[4:] for p in bids_dir.glob("sub-*") if p.is_dir())
    labels = read_labels(tuple(requested), "sub-") if requested else present
    missing = [label for label in labels if label not in present]
    if missing:
        raise NothingSelectedError(
            f"--participant-label: no folder {', '.join('sub-' + m for m in missing)} "
            f"in {bids_dir}; it has {', '.join(present) or 'none'}."
        )
    if not labels:
        raise NothingSelectedError(f"{bids_dir} has no sub-* folder; point BIDS_DIR to the dataset root.")
    return tuple(labels)


def slurm_mem_to_mb(mem: str) -> int:
    """SLURM memory (``16G``, ``16000M``, ``2T``; a bare number is MB, as for bsym-app ``--mem``) in MB."""
    match = _SLURM_MEM.fullmatch(mem.strip())
    if not match:
        raise OptionError(f"--mem {mem!r}: use a SLURM size such as 16G or 16000M (a bare number is MB).")
    number, unit = int(match.group(1)), (match.group(2) or "M").upper()
    return max(1, round(number * _MB_PER_UNIT[unit]))


def container_command(image: Path, *, engine: str, binds: list[str], gpu: bool) -> tuple[str, ...]:
    """``apptainer run --cleanenv -B ... [--nv] IMAGE``: the container prefix of each job's command.

    Parameters
    ----------
    image : Path
        The ``.sif`` image (absolute).
    engine : {"apptainer", "singularity"}
        The executable.
    binds : list of str
        ``SRC[:DST[:ro]]`` bind specifications.
    gpu : bool
        Add ``--nv``.

    Returns
    -------
    tuple of str
        The argument vector before bsym-app's own arguments.
    """
    argv = [engine, "run", "--cleanenv"]
    for spec in binds:
        argv += ["-B", spec]
    if gpu:
        argv.append("--nv")
    return (*argv, str(image))


def _sbatch_header(plan: SlurmPlan, *, name: str, log: str, array: str | None = None) -> list[str]:
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}"]
    if array:
        lines.append(f"#SBATCH --array={array}")
    lines += [f"#SBATCH --cpus-per-task={plan.cpus}", f"#SBATCH --mem={plan.mem}", f"#SBATCH --time={plan.time}"]
    if plan.partition:
        lines.append(f"#SBATCH --partition={plan.partition}")
    if plan.account:
        lines.append(f"#SBATCH --account={plan.account}")
    if plan.gpus:
        lines.append(f"#SBATCH --gres=gpu:{plan.gpus}")
    lines += [
        f"#SBATCH --output={plan.script_dir / log}",
        "",
        f"# Written by bsym submit {__version__} on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "set -euo pipefail",
        *plan.setup_lines,
    ]
    return lines


def _app_line(plan: SlurmPlan, level: str, work_dir: str, *, label: bool) -> str:
    argv = [*plan.app_command, str(plan.bids_dir), str(plan.output_dir), level]
    quoted = " ".join(shlex.quote(a) for a in argv)
    if label:
        quoted += ' --participant-label "$label"'
    quoted += f' -w "{work_dir}" --nprocs "${{SLURM_CPUS_PER_TASK:-{plan.cpus}}}"'
    quoted += f" --omp-nthreads {plan.omp_nthreads} --mem-mb {slurm_mem_to_mb(plan.mem)}"
    if plan.app_args:
        quoted += " " + " ".join(shlex.quote(a) for a in plan.app_args)
    return f"exec {quoted}"


def participant_script(plan: SlurmPlan, participants_file: Path) -> str:
    """Text of the array job: task ``i`` runs bsym-app for line ``i + 1`` of ``participants_file``."""
    last = len(plan.participants) - 1
    array = f"0-{last}" + (f"%{plan.max_parallel}" if plan.max_parallel else "")
    lines = _sbatch_header(plan, name=f"{plan.job_name}-participant", log="participant-%A_%a.out", array=array)
    work = shlex.quote(str(plan.work_dir))
    lines += [
        f"participants_file={shlex.quote(str(participants_file))}",
        'task="${SLURM_ARRAY_TASK_ID:?this script is an array job: submit it with sbatch}"',
        'label="$(sed -n "$((task + 1))p" "$participants_file")"',
        'if [ -z "$label" ]; then',
        '    echo "bsym: array task $task has no participant (line $((task + 1)) of $participants_file)" >&2',
        "    exit 64",
        "fi",
        f'work_dir={work}/"sub-$label"',
        f'mkdir -p "$work_dir" {shlex.quote(str(plan.output_dir))}',
        'echo "bsym: array task $task -> sub-$label on $(hostname), ${SLURM_CPUS_PER_TASK:-?} CPU(s)"',
        _app_line(plan, "participant", "$work_dir", label=True),
    ]
    return "\n".join(lines) + "\n"


def group_script(plan: SlurmPlan) -> str:
    """Text of the group job (submitted with ``--dependency=afterok:<array job id>``)."""
    lines = _sbatch_header(plan, name=f"{plan.job_name}-group", log="group-%j.out")
    work = shlex.quote(str(plan.work_dir))
    lines += [
        f"work_dir={work}/group",
        'mkdir -p "$work_dir"',
        'echo "bsym: group level on $(hostname), ${SLURM_CPUS_PER_TASK:-?} CPU(s)"',
        _app_line(plan, "group", "$work_dir", label=False),
    ]
    return "\n".join(lines) + "\n"


def _submit_sh(scripts: SlurmScripts) -> str:
    lines = [
        "#!/bin/bash",
        "# Submit the participant array, then the group job once every task succeeded.",
        "set -euo pipefail",
        f"array_id=$(sbatch --parsable {shlex.quote(str(scripts.participant_script))})",
        'array_id="${array_id%%;*}"',
        'echo "participant array: job $array_id"',
    ]
    if scripts.group_script:
        lines += [
            f"group_id=$(sbatch --parsable --dependency=afterok:$array_id {shlex.quote(str(scripts.group_script))})",
            'echo "group: job ${group_id%%;*} (starts after every task of $array_id succeeded)"',
        ]
    return "\n".join(lines) + "\n"


def write_slurm_scripts(plan: SlurmPlan) -> SlurmScripts:
    """Write the participants list, both sbatch scripts and ``submit.sh`` into ``plan.script_dir``.

    Parameters
    ----------
    plan : SlurmPlan
        The submission.

    Returns
    -------
    SlurmScripts
        The paths written.
    """
    from pipelines.atomic import write_text

    plan.script_dir.mkdir(parents=True, exist_ok=True)
    participants_file = write_text(plan.script_dir / "participants.txt", "\n".join(plan.participants) + "\n")
    array = write_text(plan.script_dir / "bsym-participant.sbatch", participant_script(plan, participants_file))
    group = write_text(plan.script_dir / "bsym-group.sbatch", group_script(plan)) if plan.group else None
    scripts = SlurmScripts(participants_file, array, group, plan.script_dir / "submit.sh")
    write_text(scripts.submit_script, _submit_sh(scripts))
    for path in (array, group, scripts.submit_script):
        if path is not None:
            path.chmod(0o755)
    return scripts


def _sbatch(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True)
    except FileNotFoundError:
        raise MissingInputError(
            f"{argv[0]}: not found; run bsym submit on a SLURM login node, or submit "
            "the written scripts later with their submit.sh."
        ) from None
    if result.returncode:
        raise OptionError(
            f"`{shlex.join(argv)}` failed (exit {result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
        )
    job_id = result.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise OptionError(f"`{shlex.join(argv)}` printed {result.stdout.strip()!r}, not a job id.")
    return job_id


def submit_slurm(scripts: SlurmScripts, *, sbatch: str = "sbatch") -> dict[str, str]:
    """Submit the array, then the group job depending on it (``afterok``); write ``jobs.json``.

    Parameters
    ----------
    scripts : SlurmScripts
        From :func:`write_slurm_scripts`.
    sbatch : str
        The sbatch executable.

    Returns
    -------
    dict of str to str
        ``{"participant": <array job id>, "group": <job id>}`` (no ``group`` without a group script).
    """
    from pipelines.atomic import write_json

    jobs = {"participant": _sbatch([sbatch, "--parsable", str(scripts.participant_script)])}
    if scripts.group_script:
        jobs["group"] = _sbatch(
            [sbatch, "--parsable", f"--dependency=afterok:{jobs['participant']}", str(scripts.group_script)]
        )
    write_json(scripts.participant_script.parent / "jobs.json", jobs)
    return jobs


def _local_app_command() -> tuple[str, ...]:
    beside = Path(sys.executable).parent / "bsym-app"
    found = str(beside) if beside.exists() else shutil.which("bsym-app")
    if not found:
        raise MissingInputError("bsym-app is not installed beside this bsym; pass --container IMAGE.sif.")
    return (str(Path(found).absolute()),)


@click.command("submit", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("bids_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("output_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("app_args", nargs=-1, type=click.UNPROCESSED)
@click.option("--scheduler", type=click.Choice(["slurm"]), default="slurm", show_default=True, help="Batch system.")
@click.option(
    "--participant-label",
    "participant_label",
    multiple=True,
    metavar="LABEL",
    help="A participant (or a file of labels); repeat for several. Default: every sub-* folder.",
)
@click.option(
    "-w",
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Parent of the per-task work directories (use scratch). [default: OUTPUT_DIR/../work]",
)
@click.option("--cpus", type=click.IntRange(1), default=4, show_default=True, help="CPUs per task.")
@click.option(
    "--omp-nthreads", type=click.IntRange(1), default=1, show_default=True, help="Threads per process inside a task."
)
@click.option(
    "--mem", default="16G", show_default=True, help="Memory per task (SLURM size: 16G, 16000M; a bare number is MB)."
)
@click.option("--time", "time_limit", default="12:00:00", show_default=True, help="Time limit per task.")
@click.option("--partition", help="SLURM partition.")
@click.option("--account", help="SLURM account.")
@click.option(
    "--gpus",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="GPUs per task (--gres=gpu:N; containers get --nv).",
)
@click.option("--max-parallel", type=click.IntRange(1), help="At most this many tasks at once.")
@click.option("--job-name", default="bsym", show_default=True, help="Prefix of the job names.")
@click.option(
    "--container",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="IMAGE.sif",
    help="Run bsym-app from this Apptainer/Singularity image. Default: this installation.",
)
@click.option(
    "--container-engine", type=click.Choice(["apptainer", "singularity"]), default="apptainer", show_default=True
)
@click.option(
    "-B",
    "--bind",
    "binds",
    multiple=True,
    metavar="SRC[:DST[:ro]]",
    help="Extra container binds (BIDS_DIR read-only, OUTPUT_DIR and the work dir are bound already).",
)
@click.option(
    "--setup",
    "setup_lines",
    multiple=True,
    metavar="LINE",
    help="Shell line run first in each job, e.g. 'module load apptainer'; repeatable.",
)
@click.option("--no-group", is_flag=True, help="Do not write or submit the group job.")
@click.option(
    "--script-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where scripts and job logs go. [default: OUTPUT_DIR/logs/slurm]",
)
@click.option("--submit", "do_submit", is_flag=True, help="Submit now with sbatch (else only write).")
@click.option("--sbatch", "sbatch_exe", default="sbatch", show_default=True, help="The sbatch executable.")
def submit(
    bids_dir: Path,
    output_dir: Path,
    app_args: tuple[str, ...],
    scheduler: str,
    participant_label: tuple[str, ...],
    work_dir: Path | None,
    cpus: int,
    omp_nthreads: int,
    mem: str,
    time_limit: str,
    partition: str | None,
    account: str | None,
    gpus: int,
    max_parallel: int | None,
    job_name: str,
    container: Path | None,
    container_engine: str,
    binds: tuple[str, ...],
    setup_lines: tuple[str, ...],
    no_group: bool,
    script_dir: Path | None,
    do_submit: bool,
    sbatch_exe: str,
) -> None:
    """Write (and with --submit, submit) a SLURM array with one participant per task, then a group job.

    Arguments after `--` go to every bsym-app run, e.g.
    `bsym submit /data/bids /data/out --cpus 8 --mem 32G -- --atlas-dataset /data/atlases`.
    """
    bids_dir, output_dir = bids_dir.absolute(), output_dir.absolute()
    work_dir = (work_dir or output_dir.parent / "work").absolute()
    if not _SLURM_TIME.fullmatch(time_limit):
        raise OptionError(f"--time {time_limit!r}: use minutes, HH:MM:SS or D-HH:MM:SS.")
    slurm_mem_to_mb(mem)
    participants = list_participants(bids_dir, participant_label)
    if container is not None:
        if not container.is_file():
            raise MissingInputError(
                f"--container {container}: no such image; build it with "
                "`apptainer build bsym.sif docker-daemon://bsym-app:<version>`."
            )
        app = container_command(
            container.absolute(),
            engine=container_engine,
            gpu=gpus > 0,
            binds=[f"{bids_dir}:{bids_dir}:ro", str(output_dir), str(work_dir), *binds],
        )
    else:
        app = _local_app_command()
    plan = SlurmPlan(
        bids_dir=bids_dir,
        output_dir=output_dir,
        work_dir=work_dir,
        script_dir=(script_dir or output_dir / "logs" / "slurm").absolute(),
        participants=participants,
        cpus=cpus,
        omp_nthreads=omp_nthreads,
        mem=mem.upper(),
        time=time_limit,
        partition=partition,
        account=account,
        gpus=gpus,
        max_parallel=max_parallel,
        job_name=job_name,
        app_command=app,
        setup_lines=setup_lines,
        group=not no_group,
        app_args=app_args,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    scripts = write_slurm_scripts(plan)
    click.echo(f"{scheduler}: {len(participants)} participant(s); scripts in {plan.script_dir}")
    if not do_submit:
        click.echo(f"Submit with: bash {scripts.submit_script}")
        return
    jobs = submit_slurm(scripts, sbatch=sbatch_exe)
    group = f" and group job {jobs['group']} (afterok:{jobs['participant']})" if "group" in jobs else ""
    click.echo(f"Submitted participant array job {jobs['participant']} ({len(participants)} task(s)){group}")
