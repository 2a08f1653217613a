"""``bsym-app BIDS_DIR OUTPUT_DIR {participant,group}``: the BIDS-App command line.

Options are parsed by Click, gathered into one frozen :class:`~bsym_cli.cli.config.Config` (defaults <
``--config-file`` < flags) and validated once. Heavy libraries (torch, nilearn, dipy, nipype) are
imported only after parsing, so ``--help`` and ``--version`` are fast.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from bsym_cli import __version__
from bsym_cli.cli.config import Config, WorkflowConfig, build_config, parse_mem, read_config_file
from bsym_cli.cli.labels import expand_multi_value_options, parse_name_path_pairs, read_labels
from bsym_cli.utils.errors import BsymError, ExitCode, exit_code_for

EXIT_CODES_HELP = """\b
Exit codes:
  0   success
  1   failure (a crash; see the crash files under OUTPUT_DIR/sub-<label>/log/)
  2   usage error (unknown option, missing argument)
  16  invalid BIDS input (fix the dataset or use --skip-bids-validation)
  18  the filters selected no participant or no data
  64  an option has a bad value (the message names the option)
  65  input data are malformed (the message names the file; the others are processed)
  66  a required input is missing (the message says which and how to get it)
  73  OUTPUT_DIR or the work directory cannot be written"""

#: Option groups shown in --help, fMRIPrep style.
GROUPS: dict[str, list[str]] = {
    "Filtering": ["participant_label", "session_label", "task_id", "bids_filter_file", "derivatives",
                  "bids_database_dir", "skip_bids_validation"],
    "Performance": ["nprocs", "omp_nthreads", "mem", "device", "batch_size"],
    "Workflow": ["atlas", "atlas_dataset", "force_atlas_space", "strict_atlas", "denoise_strategy",
                 "dummy_scans", "low_pass", "high_pass", "min_coverage", "window_stride", "scaling",
                 "weights", "head", "target", "streamlines", "dwi_denoise", "registration",
                 "save_tractogram", "seed", "skip"],
    "Outputs and other": ["work_dir", "config_file", "stop_on_first_crash", "nipype_plugin_file",
                          "reports_only", "boilerplate_only", "overwrite", "notrack", "verbose", "version",
                          "help"],
}

#: Options that take one or more values (``--participant-label 01 02``).
MULTI_VALUE = {"--participant-label", "--participant_label", "--session-label", "--session_label",
               "-t", "--task-id", "-d", "--derivatives", "--skip", "--head", "--target"}


class GroupedCommand(click.Command):
    """A command whose ``--help`` lists options in the sections of :data:`GROUPS`."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        records = {p.name: p.get_help_record(ctx) for p in self.get_params(ctx)}
        for section, names in GROUPS.items():
            rows = [records[n] for n in names if records.get(n)]
            if rows:
                with formatter.section(section):
                    formatter.write_dl(rows)


def _default(field: str) -> str:
    value = WorkflowConfig.model_fields[field].default
    return f" [default: {value}]"


@click.command(cls=GroupedCommand, epilog=EXIT_CODES_HELP,
               context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("bids_dir", type=click.Path(path_type=Path))
@click.argument("output_dir", type=click.Path(path_type=Path))
@click.argument("analysis_level", type=click.Choice(["participant", "group"]))
# filtering
@click.option("--participant-label", "--participant_label", "participant_label", multiple=True,
              metavar="LABEL...", help="Participants to process (with or without 'sub-'), or a file with "
              "one label per line. Default: all.")
@click.option("--session-label", "--session_label", "session_label", multiple=True, metavar="LABEL...",
              help="Sessions to process (with or without 'ses-'), or a file. Default: all.")
@click.option("-t", "--task-id", "task_id", multiple=True, metavar="TASK...", help="BOLD tasks to use.")
@click.option("--bids-filter-file", type=click.Path(path_type=Path), metavar="FILE",
              help="JSON file of pybids filters per query (keys: bold, boldmask, boldref, confounds, dwi, "
              "qsiprep_dwi, qsiprep_mask, t1w); null = entity absent, \"*\" = any.")
@click.option("-d", "--derivatives", multiple=True, metavar="NAME=PATH...",
              help="Derivative datasets, e.g. -d fmriprep=/data/fmriprep qsiprep=/data/qsiprep. "
              "Default: found under BIDS_DIR/derivatives by their GeneratedBy name.")
@click.option("--bids-database-dir", type=click.Path(path_type=Path), metavar="DIR",
              help="Where to keep (and reuse) the pybids index. Default: inside the work directory.")
@click.option("--skip-bids-validation", "--skip_bids_validation", "skip_bids_validation", is_flag=True,
              default=None, help="Do not validate BIDS_DIR's file names.")
# performance
@click.option("--nprocs", "--nthreads", "--n-cpus", "nprocs", type=int, metavar="N",
              help="Processes Nipype may run at once. [default: 1]")
@click.option("--omp-nthreads", type=int, metavar="N", help="Threads per process. [default: 1]")
@click.option("--mem", "--mem-gb", "mem", metavar="SIZE", help="Memory limit for Nipype, e.g. 16GB.")
@click.option("--device", metavar="{auto,cpu,cuda}", help="Where the network runs. [default: auto]")
@click.option("--batch-size", type=int, metavar="N", help="Windows per forward pass. [default: 8]")
# workflow
@click.option("--atlas", metavar="LABEL", help="Atlas label." + _default("atlas"))
@click.option("--atlas-dataset", type=click.Path(path_type=Path), metavar="DIR",
              help="BIDS atlas dataset to take the atlas from (else $BSYM_ATLAS_DIR, else the container's).")
@click.option("--force-atlas-space", is_flag=True, default=None,
              help="Use the atlas even if it has no image in the BOLD's template.")
@click.option("--strict-atlas", is_flag=True, default=None,
              help="Refuse weights whose atlas labels differ by name or order (default: warn).")
@click.option("--denoise-strategy", metavar="{simple,scrubbing,compcor,none}",
              help="Confound regression preset (nilearn's fMRIPrep loaders)." + _default("denoise_strategy"))
@click.option("--dummy-scans", type=int, metavar="N",
              help="Initial volumes to drop. Default: the confounds' non_steady_state_outlier columns.")
@click.option("--low-pass", type=float, metavar="HZ", help="Low-pass cut-off of the optional band-pass.")
@click.option("--high-pass", type=float, metavar="HZ", help="High-pass cut-off of the optional band-pass.")
@click.option("--min-coverage", type=float, metavar="FRACTION",
              help="Parcels with less of their voxels in the brain mask are n/a." + _default("min_coverage"))
@click.option("--window-stride", type=int, metavar="FRAMES", help="Stride between windows. Default: T.")
@click.option("--scaling", metavar="{subject,checkpoint,study}", help="Robust scaling statistics. "
              "[default: subject]")
@click.option("--weights", type=click.Path(path_type=Path), metavar="BUNDLE",
              help="Weight bundle (folder or .tar). Default: the bundled weights.")
@click.option("--head", multiple=True, type=click.Path(path_type=Path), metavar="BUNDLE...",
              help="Prediction head bundles (from `bsym finetune` or a group probe).")
@click.option("--target", multiple=True, metavar="COLUMN...",
              help="group: participants.tsv columns to probe.")
@click.option("--streamlines", type=int, metavar="N",
              help="Target streamline count." + _default("streamlines"))
@click.option("--dwi-denoise/--no-dwi-denoise", default=None,
              help="Denoise DWI (default: on for raw DWI, off for QSIPrep).")
@click.option("--registration", metavar="{affine,syn,none}",
              help="Atlas-to-DWI registration." + _default("registration"))
@click.option("--save-tractogram", is_flag=True, default=None, help="Also write the tractogram (.trx).")
@click.option("--seed", type=int, metavar="N", help="Random seed (tracking, probes)." + _default("seed"))
@click.option("--skip", multiple=True, metavar="{fmri,dmri,model}...", help="Stages to skip.")
# outputs and other
@click.option("-w", "--work-dir", type=click.Path(path_type=Path), metavar="DIR",
              help="Intermediate results; rerunning with the same one skips finished work. [default: ./work]")
@click.option("--config-file", type=click.Path(path_type=Path), metavar="FILE",
              help="TOML configuration (e.g. a dumped config.toml); flags override it.")
@click.option("--stop-on-first-crash", is_flag=True, default=None, help="Stop at the first failed step.")
@click.option("--nipype-plugin-file", type=click.Path(path_type=Path), metavar="FILE",
              help="YAML/JSON with 'plugin' and 'plugin_args' for Nipype (e.g. SLURM).")
@click.option("--reports-only", is_flag=True, default=None, help="Only rebuild the HTML reports.")
@click.option("--boilerplate-only", "--boilerplate_only", "boilerplate_only", is_flag=True, default=None,
              help="Only write the methods boilerplate.")
@click.option("--overwrite", is_flag=True, default=None, help="Redo participants that already have outputs.")
@click.option("--notrack", is_flag=True, help="Accepted for compatibility; bsym-app never tracks usage.")
@click.option("-v", "--verbose", count=True, help="More messages (-v, -vv).")
@click.version_option(__version__, "--version", prog_name="bsym-app")
@click.pass_context
def cli(ctx: click.Context, **params: Any) -> None:
    """BrainSymphony embeddings of fMRIPrep (and QSIPrep) derivatives, written as BIDS derivatives.

    \b
    Example:
      bsym-app /data/bids /data/derivatives/bsym participant --participant-label 01 02 -w /scratch/work
    """
    config = config_from_params(ctx, params)
    from bsym_cli.utils.logs import setup_logging

    setup_logging(config.execution.verbosity)
    from bsym_cli.levels.run import run

    run(config)


def _given(ctx: click.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def config_from_params(ctx: click.Context, params: dict[str, Any]) -> Config:
    """Turn parsed parameters into the validated configuration (defaults < --config-file < flags)."""
    from bsym_cli.cli.paths import check_paths, load_bids_filters, load_plugin_file

    file_layer = read_config_file(params["config_file"]) if params.get("config_file") else {}
    bids_dir = params["bids_dir"].absolute()
    output_dir = params["output_dir"].absolute()
    work_dir = (params["work_dir"] or Path("work")).absolute()
    if not params["work_dir"] and "work_dir" in file_layer.get("execution", {}):
        work_dir = Path(file_layer["execution"]["work_dir"])
    execution: dict[str, Any] = {
        "bids_dir": bids_dir, "output_dir": output_dir, "analysis_level": params["analysis_level"],
        "work_dir": work_dir,
    }
    flags: dict[str, Any] = {"execution": execution, "workflow": {}, "model": {}, "resources": {},
                             "nipype": {}}
    if _given(ctx, "participant_label"):
        execution["participant_label"] = read_labels(params["participant_label"], "sub-")
    if _given(ctx, "session_label"):
        execution["session_label"] = read_labels(params["session_label"], "ses-")
    if _given(ctx, "task_id"):
        execution["task_id"] = list(params["task_id"])
    if params.get("bids_filter_file"):
        execution["bids_filters"] = load_bids_filters(params["bids_filter_file"])
    if _given(ctx, "derivatives"):
        execution["derivatives"] = parse_name_path_pairs(params["derivatives"], "--derivatives")
    if params.get("verbose"):
        execution["verbosity"] = params["verbose"]
    for name in ("bids_database_dir", "skip_bids_validation", "stop_on_first_crash", "reports_only",
                 "boilerplate_only", "overwrite"):
        if params.get(name) is not None:
            execution[name] = params[name]
    for name in ("atlas", "atlas_dataset", "force_atlas_space", "strict_atlas", "denoise_strategy",
                 "dummy_scans", "low_pass", "high_pass", "min_coverage", "window_stride", "streamlines",
                 "dwi_denoise", "registration", "save_tractogram", "seed"):
        if params.get(name) is not None:
            flags["workflow"][name] = params[name]
    if _given(ctx, "skip"):
        flags["workflow"]["skip"] = list(params["skip"])
    for name in ("weights", "scaling", "device", "batch_size"):
        if params.get(name) is not None:
            flags["model"][name] = params[name]
    if _given(ctx, "head"):
        flags["model"]["heads"] = list(params["head"])
    if _given(ctx, "target"):
        flags["model"]["targets"] = list(params["target"])
    for name in ("nprocs", "omp_nthreads"):
        if params.get(name) is not None:
            flags["resources"][name] = params[name]
    if params.get("mem") is not None:
        flags["resources"]["mem_gb"] = parse_mem(params["mem"])
    if params.get("nipype_plugin_file"):
        flags["nipype"] = load_plugin_file(params["nipype_plugin_file"])
    file_exec = dict(file_layer.get("execution", {}))
    for key in ("bids_dir", "output_dir", "analysis_level", "work_dir", "run_uuid"):
        file_exec.pop(key, None)  # the command line always names them; a new run gets a new uuid
    file_layer = {**file_layer, "execution": file_exec}
    config = build_config(file_layer, flags)
    check_paths(config)
    return config


def main(argv: list[str] | None = None) -> None:
    """Console entry point: parse, run, and exit with the codes of docs/architecture.md ("Exit codes")."""
    argv = sys.argv[1:] if argv is None else list(argv)
    argv = expand_multi_value_options(argv, MULTI_VALUE)
    log = logging.getLogger("bsym")
    try:
        cli.main(args=argv, prog_name="bsym-app", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(ExitCode.FAILURE)
    except click.MissingParameter as exc:
        exc.show()
        sys.exit(ExitCode.USAGE)
    except click.BadParameter as exc:
        exc.show()
        sys.exit(ExitCode.BAD_OPTION)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BsymError as exc:
        click.echo(f"bsym-app: error: {exc}", err=True)
        sys.exit(int(exc.code))
    except Exception as exc:
        code = exit_code_for(exc)
        if code == ExitCode.FAILURE:
            log.exception("bsym-app failed")
        else:
            click.echo(f"bsym-app: error: {exc}", err=True)
        sys.exit(int(code))
    sys.exit(0)
