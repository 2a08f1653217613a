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
from bsym_cli.cli.config import Config, build_config, read_config_file
from bsym_cli.cli.labels import expand_multi_value_options
from bsym_cli.cli.options import OPTIONS, click_decorator, flags_layer, help_sections, multi_value_spellings
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


class GroupedCommand(click.Command):
    """A command whose ``--help`` lists options in the sections of ``bsym_cli/cli/options.py``."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        records = {p.name: p.get_help_record(ctx) for p in self.get_params(ctx)}
        for section, names in help_sections().items():
            rows = [records[n] for n in names if records.get(n)]
            if rows:
                with formatter.section(section):
                    formatter.write_dl(rows)


@click.command(
    cls=GroupedCommand,
    epilog=EXIT_CODES_HELP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
@click.argument("bids_dir", type=click.Path(path_type=Path))
@click.argument("output_dir", type=click.Path(path_type=Path))
@click.argument("analysis_level", type=click.Choice(["participant", "group"]))
@click.version_option(__version__, "--version", prog_name="bsym-app")
@click.pass_context
def _cli(ctx: click.Context, **params: Any) -> None:
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


cli = _cli
for _option in OPTIONS:  # on a Command, each decorator appends its option: declaration order is kept
    cli = click_decorator(_option)(cli)


def _given(ctx: click.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def config_from_params(ctx: click.Context, params: dict[str, Any]) -> Config:
    """Turn parsed parameters into the validated configuration (defaults < --config-file < flags)."""
    from bsym_cli.cli.paths import check_paths

    file_layer = read_config_file(params["config_file"]) if params.get("config_file") else {}
    bids_dir = params["bids_dir"].absolute()
    output_dir = params["output_dir"].absolute()
    work_dir = (params["work_dir"] or Path("work")).absolute()
    if not params["work_dir"] and "work_dir" in file_layer.get("execution", {}):
        work_dir = Path(file_layer["execution"]["work_dir"])
    execution: dict[str, Any] = {
        "bids_dir": bids_dir,
        "output_dir": output_dir,
        "analysis_level": params["analysis_level"],
        "work_dir": work_dir,
    }
    flags = flags_layer(params, lambda name: _given(ctx, name))
    flags["execution"].update(execution)
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
    argv = expand_multi_value_options(argv, multi_value_spellings())
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


if __name__ == "__main__":
    main()
