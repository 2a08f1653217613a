"""Import of the authors' published checkpoints into a :class:`BrainSymphony`.

See docs/model.md, "Published checkpoint layout".
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from brainsymphony.config import BrainSymphonyConfig
from brainsymphony.errors import CheckpointError
from brainsymphony.model import BrainSymphony

#: release file -> (relative path in the release, attribute of BrainSymphony it fills)
OFFICIAL_FILES: dict[str, tuple[str, str]] = {
    "spatial": ("functional_v1/spatial.pth", "spatial"),
    "temporal": ("functional_v1/temporal.pth", "temporal"),
    "context": ("functional_v1/context.pth", "context"),
    "fusion": ("functional_v1/fusion.pth", "perceiver"),
    "structural": ("structural_v1/structural.pth", "structural"),
}
FUNCTIONAL_FILES = ("spatial", "temporal", "context", "fusion")

#: Parameters of ours that the release does not have (built only by non-published options); left at init.
_OURS_ONLY = ("mask_token", "pos_enc.gradient_proj.")


def locate_official(src_dir: str | Path) -> dict[str, Path]:
    """Find the release files under ``src_dir``, in the release layout or flat.

    Parameters
    ----------
    src_dir : str or Path
        Folder holding ``functional_v1/{spatial,temporal,context,fusion}.pth`` and
        ``structural_v1/structural.pth``, or the same file names directly.

    Returns
    -------
    dict
        Release name (``spatial``, ``temporal``, ``context``, ``fusion``, ``structural``) -> path, for the
        files present.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise CheckpointError(f"{src}: not a folder; give the folder of the official BrainSymphony release")
    found = {}
    for name, (relative, _) in OFFICIAL_FILES.items():
        for candidate in (src / relative, src / Path(relative).name):
            if candidate.is_file():
                found[name] = candidate
                break
    return found


def official_provenance(src_dir: str | Path) -> dict[str, str]:
    """sha256 of every release file present under ``src_dir`` (release name -> hex digest)."""
    return {name: _sha256(path) for name, path in locate_official(src_dir).items()}


def import_official(
    src_dir: str | Path, *, config: BrainSymphonyConfig | None = None, allow_partial: bool = False
) -> BrainSymphony:
    """Build a model from the authors' five-file release (any complete subset).

    The mode follows the files present: the four functional files -> ``functional``, ``structural.pth``
    -> ``structural``, all five -> ``multimodal`` (the fusion gate, absent from the release, is set neutral:
    g = 0.5). Every key is mapped, every shape checked and a DataParallel ``module.`` prefix stripped.

    Parameters
    ----------
    src_dir : str or Path
        See :func:`locate_official`.
    config : BrainSymphonyConfig, optional
        Architecture to build (its ``mode`` is replaced); defaults to the published one.
    allow_partial : bool
        Accept an incomplete functional set; the missing parts keep their random initialisation, seeded
        (0) so the same files give the same bundle (for tests and inspection only).

    Returns
    -------
    BrainSymphony
        In eval mode.

    Raises
    ------
    CheckpointError
        No release file found, an incomplete functional set, an unreadable file, or any missing,
        unexpected or wrongly shaped key (all listed, per file).
    """
    found = locate_official(src_dir)
    if not found:
        expected = ", ".join(relative for relative, _ in OFFICIAL_FILES.values())
        raise CheckpointError(f"{src_dir}: no BrainSymphony release file found; expected any of {expected}")
    functional = [name for name in FUNCTIONAL_FILES if name in found]
    missing = [OFFICIAL_FILES[name][0] for name in FUNCTIONAL_FILES if name not in found]
    if functional and missing and not allow_partial:
        raise CheckpointError(
            f"{src_dir}: the functional model needs all four files; missing {', '.join(missing)}."
            " Copy them from the release (or import structural_v1/structural.pth alone)."
        )
    if functional and "structural" in found:
        mode = "multimodal"
    else:
        mode = "functional" if functional else "structural"
    with torch.random.fork_rng(devices=[]):  # parts a partial import leaves untrained are reproducible
        torch.manual_seed(0)
        model = BrainSymphony((config or BrainSymphonyConfig.published()).replace(mode=mode))
    problems: list[str] = []
    loaded: dict[str, dict[str, torch.Tensor]] = {}
    for name, path in found.items():
        module = getattr(model, OFFICIAL_FILES[name][1])
        state = _read_state_dict(path)
        file_problems = _compare(state, module.state_dict())
        problems += [f"{path}: {problem}" for problem in file_problems]
        loaded[name] = state
    if problems:
        raise CheckpointError(
            "the checkpoint does not match the BrainSymphony architecture (nothing was loaded):\n  "
            + "\n  ".join(problems)
        )
    for name, state in loaded.items():
        getattr(model, OFFICIAL_FILES[name][1]).load_state_dict(state, strict=False)
    if model.gate is not None:
        model.gate.neutral_()
    return model.eval()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict safely (weights only) and strip a ``module.`` prefix."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable, truncated, or holds pickled objects
        raise CheckpointError(f"{path}: cannot be read as a weights-only PyTorch file ({exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        kinds = sorted({type(v).__name__ for v in state.values()}) if isinstance(state, dict) else []
        raise CheckpointError(
            f"{path}: expected a plain state dict of tensors, found {type(state).__name__} {kinds};"
            " save the module's state_dict() instead"
        )
    return {key.removeprefix("module."): value for key, value in state.items()}


def _compare(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> list[str]:
    """Describe every missing, unexpected and wrongly shaped key."""
    problems = []
    missing = [key for key in expected if key not in state and not any(tag in key for tag in _OURS_ONLY)]
    unexpected = [key for key in state if key not in expected]
    if missing:
        problems.append(f"missing key(s) {missing}")
    if unexpected:
        problems.append(f"unexpected key(s) {unexpected}")
    for key, value in state.items():
        if key in expected and tuple(value.shape) != tuple(expected[key].shape):
            problems.append(
                f"key {key!r} has shape {tuple(value.shape)}, the architecture expects {tuple(expected[key].shape)}"
            )
    return problems


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
