"""``bsym``: the tools around the BIDS-App (demo data, weights, benchmarks, training, submission).

Subcommands live in their own modules and are imported only when called, so ``bsym --help`` is fast.
"""

from __future__ import annotations

import importlib
import sys

import click

from bsym_cli import __version__
from bsym_cli.utils.errors import BsymError, ExitCode, exit_code_for

#: name -> (module, attribute, one-line help). Each attribute is a click command or group.
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("bsym_cli.commands.demo.command", "demo", "Build the simulated demo study."),
    "weights": ("bsym_cli.commands.weights", "weights", "Import, inspect and verify weight bundles."),
    "bench": ("bsym_cli.commands.bench", "bench", "Measure speed and memory against references."),
    "pretrain": ("bsym_cli.commands.train", "pretrain", "Self-supervised pretraining."),
    "finetune": ("bsym_cli.commands.train", "finetune", "Fit a prediction head."),
    "submit": ("bsym_cli.commands.submit", "submit", "Write (and submit) a SLURM array script."),
    "templates": ("bsym_cli.commands.templates", "templates", "Fetch the TemplateFlow files bsym-app reads."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str, str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | self._available())

    def _available(self) -> set[str]:
        return {name for name, (module, _, _) in self.lazy.items() if importlib.util.find_spec(module)}

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy and name in self._available():
            module, attr, _ = self.lazy[name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self.lazy[name][2]) for name in self.list_commands(ctx) if name in self.lazy]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, lazy=SUBCOMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bsym")
def cli() -> None:
    """Tools of bsym-app: demo data, weights, benchmarks, training, cluster submission."""


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run ``bsym`` and turn user errors into exit codes."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(ExitCode.FAILURE)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BsymError as exc:
        click.echo(f"bsym: error: {exc}", err=True)
        sys.exit(exc.code)
    except Exception as exc:  # errors of lower layers that carry a meaning
        code = exit_code_for(exc)
        if code == ExitCode.FAILURE:
            raise
        click.echo(f"bsym: error: {exc}", err=True)
        sys.exit(code)
    sys.exit(0)
