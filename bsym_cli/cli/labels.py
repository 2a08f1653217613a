"""Command-line values that come as lists: participant and session labels, ``NAME=PATH`` pairs.

Click has no variable-length options, so :func:`expand_multi_value_options` rewrites
``--participant-label 01 02 sub-03`` into one option per value before Click parses the line
(the way argparse's ``nargs='+'`` reads it: values run until the next token starting with ``-``).
"""

from __future__ import annotations

import re
from pathlib import Path

from bsym_cli.utils.errors import OptionError


def expand_multi_value_options(argv: list[str], multi: set[str]) -> list[str]:
    """Repeat each option of ``multi`` before every value that follows it.

    Parameters
    ----------
    argv : list of str
        The command line without the program name.
    multi : set of str
        Option spellings that take one or more values (e.g. ``{"--participant-label", "-t"}``).

    Returns
    -------
    list of str
        ``["--participant-label", "01", "--participant-label", "02", ...]`` style arguments.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        name, eq, inline = token.partition("=")
        if token in multi or (eq and name in multi):
            values = [inline] if eq else []
            i += 1
            while not eq and i < len(argv) and not argv[i].startswith("-"):
                values.append(argv[i])
                i += 1
            if not values:  # let Click report the missing value
                out.append(name)
            for value in values:
                out += [name, value]
            continue
        out.append(token)
        i += 1
    return out


def read_labels(values: tuple[str, ...] | list[str], prefix: str) -> list[str]:
    """Labels from values that are labels (``01``, ``sub-01``) or files with one label per line.

    A value that is a valid label is always a label, even if a file of that name exists in the current
    folder (that file is mentioned in the log); write ``./01`` to read such a file. Any other value must
    name a file. The ``prefix`` (``sub-`` or ``ses-``) is stripped; duplicates are dropped, order kept.
    """
    from bsym_cli.utils.logs import get_logger

    labels: list[str] = []
    for value in values:
        path = Path(value)
        items = [value]
        if re.fullmatch(rf"(?:{prefix})?[a-zA-Z0-9]+", value):
            if path.is_file():
                get_logger().warning(
                    "'%s' is read as a label, not as the file of that name in %s (write ./%s to "
                    "read labels from the file).",
                    value,
                    Path.cwd(),
                    value,
                )
        elif path.is_file():
            items = [line.split("\t")[0].strip() for line in path.read_text().splitlines()]
            items = [i for i in items if i and not i.startswith("#") and i != "participant_id"]
        for item in items:
            item = item[len(prefix) :] if item.startswith(prefix) else item
            if item not in labels:
                labels.append(item)
    return labels


def parse_name_path_pairs(values: tuple[str, ...] | list[str], option: str) -> dict[str, Path]:
    """``NAME=PATH`` pairs (``-d fmriprep=/data/fmriprep``) as a dict; a bare PATH is named by its folder."""
    pairs: dict[str, Path] = {}
    for value in values:
        name, eq, path = value.partition("=")
        if not eq:
            name, path = Path(value).name, value
        if not name or not path:
            raise OptionError(f"{option} {value!r}: use NAME=PATH, e.g. {option} fmriprep=/data/fmriprep.")
        pairs[name.lower()] = Path(path)
    return pairs
