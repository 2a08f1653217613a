"""Every ``bsym-app`` option, declared once.

One :class:`Option` says how an option is spelled, which ``--help`` section lists it, whether it takes several
values, and which configuration field it sets. The Click command, the help sections, the multi-value
expansion and the flags layer of the configuration all follow from :data:`OPTIONS`. Defaults and choices
shown in ``--help`` are read from the pydantic models in ``bsym_cli/cli/config.py``.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from bsym_cli.cli.config import Config, parse_mem
from bsym_cli.cli.labels import parse_name_path_pairs, read_labels

#: ``--help`` sections, in order (fMRIPrep style).
SECTIONS = ("Filtering", "Performance", "Workflow", "Outputs and other")


@dataclass(frozen=True)
class Option:
    """One command-line option.

    Attributes
    ----------
    flags : tuple of str
        Spellings, e.g. ``("--participant-label", "--participant_label")``; ``"--x/--no-x"`` for a switch pair.
    help : str
    section : str
        One of :data:`SECTIONS`.
    field : str or None
        ``"<section>.<field>"`` of :class:`~bsym_cli.cli.config.Config` that the value sets; ``"nipype"`` for a
        whole section; None when the command line uses the value itself.
    name : str or None
        Click's parameter name; default: the last part of ``field``.
    type : click type or None
    multiple : bool
        Takes one or more values (``--skip dmri model``).
    flag : bool
        A switch without a value.
    count : bool
        Counted (``-vv``).
    convert : callable or None
        Turns the parsed value into the configuration value (None: leave the field unset).
    show_default : bool
        Append the pydantic default, ``[default: ...]``.
    metavar : str or None
        The value's name in ``--help`` (a ``Literal`` field shows its choices instead).
    """

    flags: tuple[str, ...]
    help: str
    section: str
    field: str | None = None
    name: str | None = None
    type: Any = None
    multiple: bool = False
    flag: bool = False
    count: bool = False
    convert: Callable[[Any], Any] | None = None
    show_default: bool = False
    metavar: str | None = None

    @property
    def dest(self) -> str:
        """Click's parameter name."""
        if self.name:
            return self.name
        assert self.field is not None, self.flags
        return self.field.rsplit(".", 1)[-1]

    def model_field(self):
        """The pydantic field this option sets, or None."""
        if not self.field or "." not in self.field:
            return None
        section, name = self.field.split(".")
        return Config.model_fields[section].annotation.model_fields[name]


def _bids_filters(path: Path) -> dict[str, Any]:
    from bsym_cli.cli.paths import load_bids_filters

    return load_bids_filters(path)


def _plugin(path: Path) -> dict[str, Any]:
    from bsym_cli.cli.paths import load_plugin_file

    return load_plugin_file(path)


PATH = click.Path(path_type=Path)
OPTIONS: tuple[Option, ...] = (
    # filtering
    Option(
        ("--participant-label", "--participant_label"),
        "Participants to process (with or without 'sub-'), or a file with one label per line. Default: all.",
        "Filtering",
        "execution.participant_label",
        multiple=True,
        metavar="LABEL",
        convert=lambda v: read_labels(v, "sub-"),
    ),
    Option(
        ("--session-label", "--session_label", "--session-id"),
        "Sessions to process (with or without 'ses-'), or a file. Default: all.",
        "Filtering",
        "execution.session_label",
        multiple=True,
        metavar="LABEL",
        convert=lambda v: read_labels(v, "ses-"),
    ),
    Option(
        ("-t", "--task-id"),
        "BOLD tasks to use.",
        "Filtering",
        "execution.task_id",
        multiple=True,
        convert=list,
        metavar="TASK",
    ),
    Option(
        ("--bids-filter-file",),
        "JSON file of pybids filters per query (keys: bold, boldmask, boldref, "
        'confounds, dwi, qsiprep_dwi, qsiprep_mask, t1w); null = entity absent, "*" = any.',
        "Filtering",
        "execution.bids_filters",
        name="bids_filter_file",
        type=PATH,
        convert=_bids_filters,
        metavar="FILE",
    ),
    Option(
        ("-d", "--derivatives", "--datasets"),
        "Derivative datasets, e.g. -d fmriprep=/data/fmriprep qsiprep=/data/qsiprep. "
        "Default: found under BIDS_DIR/derivatives by their GeneratedBy name.",
        "Filtering",
        "execution.derivatives",
        multiple=True,
        metavar="NAME=PATH",
        convert=lambda v: parse_name_path_pairs(v, "--derivatives"),
    ),
    Option(
        ("--bids-database-dir",),
        "Where to keep (and reuse) the pybids index. Default: inside the work directory.",
        "Filtering",
        "execution.bids_database_dir",
        type=PATH,
        metavar="DIR",
    ),
    Option(
        ("--skip-bids-validation", "--skip_bids_validation"),
        "Do not validate BIDS_DIR's file names.",
        "Filtering",
        "execution.skip_bids_validation",
        flag=True,
    ),
    # performance
    Option(
        ("--nprocs", "--nthreads", "--n-cpus"),
        "Processes Nipype may run at once. Default: the CPUs available to this process (its CPU affinity, the "
        "cgroup quota and a SLURM task's allocation).",
        "Performance",
        "resources.nprocs",
        type=int,
        metavar="N",
    ),
    Option(
        ("--omp-nthreads",),
        "Threads per process. Default: as fMRIPrep picks it, one CPU fewer than --nprocs (all CPUs when "
        "--nprocs is 1), at most 8.",
        "Performance",
        "resources.omp_nthreads",
        type=int,
        metavar="N",
    ),
    Option(
        ("--mem",),
        "Memory limit for Nipype: a bare number is MB, as in fMRIPrep and as schedulers give it (16000); "
        "units are accepted (16GB, 16000MB).",
        "Performance",
        "resources.mem_gb",
        name="mem",
        convert=parse_mem,
        metavar="SIZE",
    ),
    Option(
        ("--mem-mb",),
        "Memory limit in MB.",
        "Performance",
        "resources.mem_gb",
        name="mem_mb",
        type=int,
        convert=lambda mb: mb / 1000,
        metavar="MB",
    ),
    Option(
        ("--mem-gb",),
        "Memory limit in GB.",
        "Performance",
        "resources.mem_gb",
        name="mem_gb",
        type=float,
        metavar="GB",
    ),
    Option(
        ("--resource-monitor",),
        "Record each step's peak memory and CPU use in its Nipype result file (work folder); `bsym bench "
        "participant` reads them.",
        "Performance",
        "resources.resource_monitor",
        flag=True,
    ),
    Option(("--device",), "Where the network runs.", "Performance", "model.device", show_default=True),
    Option(
        ("--precision",),
        "Arithmetic of the network: fp32, or bf16 autocast (embeddings within a cosine of 0.9999 of fp32's). "
        "auto: bf16 on CPUs with AMX, where it is faster, fp32 elsewhere (README.md, Performance). The precision "
        "used is recorded in the feature sidecar (ComputedFrom).",
        "Performance",
        "model.precision",
        show_default=True,
    ),
    Option(
        ("--batch-size",),
        "Windows per forward pass.",
        "Performance",
        "model.batch_size",
        type=int,
        show_default=True,
        metavar="N",
    ),
    # workflow
    Option(("--atlas",), "Atlas label.", "Workflow", "workflow.atlas", show_default=True, metavar="LABEL"),
    Option(
        ("--atlas-dataset",),
        "BIDS atlas dataset to take the atlas from (else $BSYM_ATLAS_DIR, else the container's).",
        "Workflow",
        "workflow.atlas_dataset",
        type=PATH,
        metavar="DIR",
    ),
    Option(
        ("--force-atlas-space",),
        "Use the atlas even if it has no image in the BOLD's template.",
        "Workflow",
        "workflow.force_atlas_space",
        flag=True,
    ),
    Option(
        ("--strict-atlas",),
        "Refuse weights whose atlas labels differ by name or order (default: warn).",
        "Workflow",
        "workflow.strict_atlas",
        flag=True,
    ),
    Option(
        ("--denoise-strategy",),
        "Confound regression preset (nilearn's fMRIPrep loaders).",
        "Workflow",
        "workflow.denoise_strategy",
        show_default=True,
    ),
    Option(
        ("--dummy-scans",),
        "Initial volumes to drop. Default: the confounds' non_steady_state_outlier columns.",
        "Workflow",
        "workflow.dummy_scans",
        type=int,
        metavar="N",
    ),
    Option(
        ("--low-pass", "--upper-bpf"),
        "Low-pass cut-off of the optional band-pass, in Hz.",
        "Workflow",
        "workflow.low_pass",
        type=float,
        metavar="HZ",
    ),
    Option(
        ("--high-pass", "--lower-bpf"),
        "High-pass cut-off of the optional band-pass, in Hz.",
        "Workflow",
        "workflow.high_pass",
        type=float,
        metavar="HZ",
    ),
    Option(
        ("--min-coverage",),
        "Parcels with less of their voxels in the brain mask are n/a.",
        "Workflow",
        "workflow.min_coverage",
        type=float,
        show_default=True,
        metavar="FRACTION",
    ),
    Option(
        ("--fd-thresh",),
        "Framewise displacement (mm) above which --denoise-strategy scrubbing censors a frame. Default: the "
        "preset's 0.5 mm.",
        "Workflow",
        "workflow.fd_thresh",
        type=float,
        metavar="MM",
    ),
    Option(
        ("--window-stride",),
        "Stride between windows, in frames. Default: T.",
        "Workflow",
        "workflow.window_stride",
        type=int,
        metavar="FRAMES",
    ),
    Option(("--scaling",), "Robust scaling statistics.", "Workflow", "model.scaling", show_default=True),
    Option(
        ("--weights",),
        "Weight bundle (folder or .tar). Default: the bundled weights.",
        "Workflow",
        "model.weights",
        type=PATH,
        metavar="BUNDLE",
    ),
    Option(
        ("--head",),
        "Prediction head bundles (from `bsym finetune` or a group probe).",
        "Workflow",
        "model.heads",
        name="head",
        type=PATH,
        multiple=True,
        convert=list,
        metavar="BUNDLE",
    ),
    Option(
        ("--target",),
        "group: participants.tsv columns to probe.",
        "Workflow",
        "model.targets",
        name="target",
        multiple=True,
        convert=list,
        metavar="COLUMN",
    ),
    Option(
        ("--streamlines",),
        "Target streamline count.",
        "Workflow",
        "workflow.streamlines",
        type=int,
        show_default=True,
        metavar="N",
    ),
    Option(
        ("--dwi-denoise/--no-dwi-denoise",),
        "Denoise DWI (default: on for raw DWI, off for QSIPrep).",
        "Workflow",
        "workflow.dwi_denoise",
        flag=True,
    ),
    Option(("--registration",), "Atlas-to-DWI registration.", "Workflow", "workflow.registration", show_default=True),
    Option(
        ("--save-tractogram",), "Also write the tractogram (.trx).", "Workflow", "workflow.save_tractogram", flag=True
    ),
    Option(
        ("--seed", "--random-seed"),
        "Random seed (tracking, region groups, probes).",
        "Workflow",
        "workflow.seed",
        type=int,
        show_default=True,
        metavar="N",
    ),
    Option(("--skip",), "Stages to skip.", "Workflow", "workflow.skip", multiple=True, convert=list),
    # outputs and other
    Option(
        ("-w", "--work-dir"),
        "Intermediate results; rerunning with the same one skips finished work. [default: ./work]",
        "Outputs and other",
        name="work_dir",
        type=PATH,
        metavar="DIR",
    ),
    Option(
        ("--config-file",),
        "TOML configuration (e.g. a dumped config.toml); flags override it.",
        "Outputs and other",
        name="config_file",
        type=PATH,
        metavar="FILE",
    ),
    Option(
        ("--stop-on-first-crash",),
        "Stop at the first failed step.",
        "Outputs and other",
        "execution.stop_on_first_crash",
        flag=True,
    ),
    Option(
        ("--nipype-plugin-file", "--use-plugin"),
        "YAML/JSON with 'plugin' and 'plugin_args' for Nipype (e.g. SLURM).",
        "Outputs and other",
        "nipype",
        name="nipype_plugin_file",
        type=PATH,
        convert=_plugin,
        metavar="FILE",
    ),
    Option(
        ("--reports-only",), "Only rebuild the HTML reports.", "Outputs and other", "execution.reports_only", flag=True
    ),
    Option(
        ("--boilerplate-only", "--boilerplate_only"),
        "Only write the methods boilerplate.",
        "Outputs and other",
        "execution.boilerplate_only",
        flag=True,
    ),
    Option(
        ("--overwrite",),
        "Redo participants that already have outputs.",
        "Outputs and other",
        "execution.overwrite",
        flag=True,
    ),
    Option(
        ("--strict-config",),
        "Refuse an OUTPUT_DIR whose dataset_description.json records other settings (another "
        "ConfigurationHash); by default that is a warning.",
        "Outputs and other",
        "execution.strict_config",
        flag=True,
    ),
    Option(
        ("--notrack",),
        "Accepted for compatibility; bsym-app never tracks usage.",
        "Outputs and other",
        name="notrack",
        flag=True,
    ),
    Option(
        ("-v", "--verbose"),
        "More messages (-v, -vv).",
        "Outputs and other",
        "execution.verbosity",
        name="verbose",
        count=True,
        convert=lambda v: v or None,
    ),
)


def _choices(field) -> tuple[str, ...] | None:
    """The values of a ``Literal`` field (through ``Optional``), or None."""
    annotation = field.annotation
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is typing.Literal:
            return tuple(str(v) for v in typing.get_args(candidate))
    return None


def _metavar(option: Option) -> str | None:
    """Choices of a ``Literal`` field as ``{a,b}``, else the declared word; ``...`` when several values."""
    field = option.model_field()
    choices = _choices(field) if field else None
    word = "{" + ",".join(choices) + "}" if choices else option.metavar
    return None if word is None else word + ("..." if option.multiple else "")


def help_text(option: Option) -> str:
    """The option's help, with its pydantic default when :attr:`Option.show_default`."""
    field = option.model_field()
    if option.show_default and field is not None:
        return f"{option.help} [default: {field.default}]"
    return option.help


def click_decorator(option: Option) -> Callable:
    """The ``click.option`` of ``option``."""
    kwargs: dict[str, Any] = {"help": help_text(option)}
    if option.count:
        kwargs["count"] = True
    elif option.flag:
        kwargs.update(default=None, **({} if "/" in option.flags[0] else {"is_flag": True}))
    else:
        kwargs.update(metavar=_metavar(option), multiple=option.multiple)
        if option.type is not None:
            kwargs["type"] = option.type
    return click.option(*option.flags, option.dest, **kwargs)


def help_sections() -> dict[str, list[str]]:
    """Section -> parameter names, in declaration order (``--version`` and ``--help`` end the last one)."""
    sections: dict[str, list[str]] = {name: [] for name in SECTIONS}
    for option in OPTIONS:
        sections[option.section].append(option.dest)
    sections[SECTIONS[-1]] += ["version", "help"]
    return sections


def multi_value_spellings() -> set[str]:
    """Every spelling of the options that take one or more values."""
    return {flag for option in OPTIONS if option.multiple for flag in option.flags}


def flags_layer(params: dict[str, Any], given: Callable[[str], bool]) -> dict[str, Any]:
    """The configuration layer of the options given on the command line.

    Parameters
    ----------
    params : dict
        Click's parsed parameters.
    given : callable
        Whether a parameter was typed (not a default).
    """
    layer: dict[str, Any] = {"execution": {}, "workflow": {}, "model": {}, "resources": {}, "nipype": {}}
    for option in OPTIONS:
        value = params.get(option.dest)
        if option.field is None or value is None or (option.multiple and not given(option.dest)):
            continue
        value = option.convert(value) if option.convert else value
        if value is None:
            continue
        if "." in option.field:
            section, name = option.field.split(".")
            layer[section][name] = value
        else:
            layer[option.field] = value
    return layer
