"""The fingerprint of an atlas's labels, shared by atlas datasets, weight bundles and the demo simulator."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def labels_sha256(indices: Sequence[int], names: Sequence[str]) -> str:
    """sha256 of the lines ``"<index>\\t<name>\\n"`` in order: a stable fingerprint of an atlas's labels."""
    text = "".join(f"{int(i)}\t{n}\n" for i, n in zip(indices, names, strict=True))
    return hashlib.sha256(text.encode()).hexdigest()
