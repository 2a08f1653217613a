"""Start-up environment of one run: where libraries may write caches, how many threads, which device.

Containers run with a read-only ``$HOME`` (Apptainer binds it read-only on many clusters, Docker users
pass ``--user`` with no home at all), so every library cache is sent to the work directory before the
library is imported. Call, in this order and before importing torch, nilearn, dipy, nipype or matplotlib::

    redirect_caches(config.execution.work_dir)
    set_threads(config.resources.omp_nthreads)
    device = resolve_device(config.model.device)
    precision = resolve_precision(config.model.precision, device)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, MutableMapping
from pathlib import Path

from bsym_cli.bids.templates import templateflow_home
from bsym_cli.utils.errors import OptionError

#: Environment variable -> sub-folder of ``<work_dir>/.cache`` it is redirected to.
CACHE_VARIABLES: dict[str, str] = {
    "DIPY_HOME": "dipy",
    "TORCH_HOME": "torch",
    "MPLCONFIGDIR": "matplotlib",
    "NUMBA_CACHE_DIR": "numba",
    "NIPYPE_CONFIG_DIR": "nipype",
    "XDG_CACHE_HOME": "xdg",
}

#: Variables that cap the threads of the numerical libraries (OpenMP, MKL, OpenBLAS, numexpr).
THREAD_VARIABLES: tuple[str, ...] = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)

GPU_HELP = (
    "Make the GPU visible to the container: `apptainer run --nv ...` (Singularity: `singularity run "
    "--nv ...`), or `docker run --gpus all ...`; on a cluster, also request a GPU from the scheduler "
    "(e.g. `sbatch --gres=gpu:1`). Or run on the CPU with `--device cpu` (or `--device auto`)."
)


def redirect_caches(work_dir: str | Path, *, environ: MutableMapping[str, str] | None = None) -> dict[str, Path]:
    """Point every library cache at ``<work_dir>/.cache/<library>`` unless the user already set it.

    Sets (when unset or empty) ``DIPY_HOME``, ``TORCH_HOME``, ``MPLCONFIGDIR``,
    ``NUMBA_CACHE_DIR``, ``NIPYPE_CONFIG_DIR`` and ``XDG_CACHE_HOME``, and ``HOME`` when it is unset (an
    arbitrary ``docker run --user`` uid has none). ``BSYM_CACHE_DIR`` (the wheel-data cache, baked into
    the container) is never touched. ``TEMPLATEFLOW_HOME`` defaults to the persistent bsym cache instead
    (:func:`bsym_cli.bids.templates.templateflow_home`): templates are inputs, fetched once. The folders are
    created. Must run before the libraries are imported: most of them read their variable once, at import.

    Parameters
    ----------
    work_dir : str or Path
        The run's work directory (``-w``); must be writable.
    environ : mutable mapping, optional
        The environment to change; default ``os.environ``.

    Returns
    -------
    dict of str to Path
        Every cache variable -> the folder it now points to (set here or by the user).
    """
    env = os.environ if environ is None else environ
    root = Path(work_dir).absolute() / ".cache"
    folders: dict[str, Path] = {"TEMPLATEFLOW_HOME": templateflow_home(env)}  # before XDG_CACHE_HOME moves
    for variable, sub in CACHE_VARIABLES.items():
        if not env.get(variable):
            env[variable] = str(root / sub)
        folders[variable] = Path(env[variable])
    if not env.get("HOME"):
        env["HOME"] = str(root / "home")
        folders["HOME"] = Path(env["HOME"])
    for folder in folders.values():
        if str(folder).startswith(str(root)):
            folder.mkdir(parents=True, exist_ok=True)
    return folders


def ensure_login_name(*, environ: MutableMapping[str, str] | None = None) -> str:
    """Set ``LOGNAME`` and ``USER`` when a clean environment lacks them; return the login name.

    Nipype's SLURM and SGE plugins name jobs after ``$LOGNAME`` and fail without it, and
    ``apptainer run --cleanenv`` or ``docker run --user`` can leave it unset. The name comes from the
    password database, else ``uid<number>``.
    """
    env = os.environ if environ is None else environ
    name = env.get("LOGNAME") or env.get("USER")
    if not name:
        import pwd

        try:
            name = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:  # an arbitrary --user uid with no passwd entry
            name = f"uid{os.getuid()}"
    for variable in ("LOGNAME", "USER"):
        if not env.get(variable):
            env[variable] = name
    return name


def set_threads(omp_nthreads: int, *, environ: MutableMapping[str, str] | None = None) -> int:
    """Let each process use ``omp_nthreads`` threads: OpenMP, MKL, OpenBLAS, numexpr and torch.

    The container sets ``OMP_NUM_THREADS=1`` so that nothing oversubscribes a shared node; this is the
    one place that raises it, from ``--omp-nthreads``. Torch is only configured if already imported
    (importing it here would cost seconds for runs that never use it); Nipype workers inherit the
    environment variables.

    Parameters
    ----------
    omp_nthreads : int
        Threads per process, >= 1.
    environ : mutable mapping, optional
        The environment to change; default ``os.environ``.

    Returns
    -------
    int
        The thread count applied.
    """
    if int(omp_nthreads) < 1:
        raise OptionError(f"--omp-nthreads {omp_nthreads}: use a positive number of threads.")
    env = os.environ if environ is None else environ
    for variable in THREAD_VARIABLES:
        env[variable] = str(int(omp_nthreads))
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(omp_nthreads))
    return int(omp_nthreads)


#: glibc ``mallopt`` parameters, the values :func:`freed_memory_kept` gives them and those it leaves behind
#: (where glibc's own adaptive thresholds top out on 64-bit systems).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
HEAP_BLOCK_BYTES, KEEP_FREED_BYTES = 64 << 20, 1 << 30
GLIBC_MMAP_THRESHOLD_MAX, GLIBC_TRIM_THRESHOLD_MAX = 32 << 20, 64 << 20


@contextlib.contextmanager
def freed_memory_kept() -> Iterator[bool]:
    """While the model runs, let this process reuse the memory it frees instead of handing it back at once.

    A forward pass allocates and frees tensors of a few to a few tens of MB. By default glibc returns such
    blocks to the system when they are freed, and the next pass pays a page fault for every 4 kB page it
    writes again (about 10% of a batch of 4 on 2 cores; ``bsym bench model``). Inside the block, allocations
    under 64 MB come from the heap and up to 1 GB freed at its top stays mapped, so peak memory is unchanged;
    larger arrays are still returned. On leaving, the thresholds are set to the values glibc's adaptive ones
    reach at most, for the Nipype workers the process may fork later.

    Yields
    ------
    bool
        Whether the C library took the setting (False where it has no ``mallopt``, as off glibc).
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        yield False
        return
    try:
        yield bool(mallopt(M_MMAP_THRESHOLD, HEAP_BLOCK_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))
    finally:
        mallopt(M_MMAP_THRESHOLD, GLIBC_MMAP_THRESHOLD_MAX)
        mallopt(M_TRIM_THRESHOLD, GLIBC_TRIM_THRESHOLD_MAX)


def resolve_device(requested: str) -> str:
    """Turn ``--device`` into the device the network runs on; fail fast when a GPU is asked for but absent.

    Parameters
    ----------
    requested : {"auto", "cpu", "cuda"} or "cuda:<n>"
        The ``--device`` value.

    Returns
    -------
    str
        ``"cpu"`` or ``"cuda"`` (or ``"cuda:<n>"`` as requested).

    Raises
    ------
    OptionError
        Exit code 64: an unknown value, or ``cuda`` with no usable GPU; the message says how to expose
        one (``--nv`` for Apptainer, ``--gpus all`` for Docker).
    """
    value = str(requested).strip().lower()
    if value == "cpu":
        return "cpu"
    if value not in ("auto", "cuda") and not (value.startswith("cuda:") and value[5:].isdigit()):
        raise OptionError(f"--device {requested!r}: use auto, cpu or cuda.")
    import torch

    available = torch.cuda.is_available()
    if value == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise OptionError(
            f"--device {requested}: no CUDA GPU is visible to this process "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}, "
            f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}). "
            f"{GPU_HELP}"
        )
    if value.startswith("cuda:") and int(value[5:]) >= torch.cuda.device_count():
        raise OptionError(
            f"--device {requested}: only {torch.cuda.device_count()} GPU(s) are visible "
            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}). {GPU_HELP}"
        )
    return value


def resolve_precision(requested: str, device: str) -> str:
    """Turn ``--precision`` into ``"fp32"`` or ``"bf16"`` on ``device`` (``brainsymphony/precision.py``).

    Raises
    ------
    OptionError
        Exit code 64: bf16 asked for on a GPU without bf16 support.
    """
    from brainsymphony.precision import resolve_precision as resolve

    try:
        return resolve(requested, device)
    except ValueError as error:
        raise OptionError(f"--precision {requested}: {error}") from None
