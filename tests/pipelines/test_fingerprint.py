"""Code fingerprints: an edit of a step's code (or of what it imports) reruns its cached Nipype node."""

from __future__ import annotations

import importlib
import importlib.machinery
import inspect
import sys
from pathlib import Path

import pytest
from nipype.interfaces.base import File, TraitedSpec, traits
from nipype.pipeline import engine as pe

from pipelines import fingerprint
from pipelines.fingerprint import CodeInputSpec, FingerprintedInterface, code_fingerprint

INTERFACE_MODULES = ("pipelines.dmri.interfaces", "pipelines.fmri.interfaces", "pipelines.participant")


@pytest.fixture
def toy_package(tmp_path: Path, monkeypatch) -> Path:
    """``toypkg``: ``step`` imports ``constants`` (absolute) and ``helpers`` (relative); ``other`` stands alone."""
    package = tmp_path / "toypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "constants.py").write_text("STEP = 0.25\n")
    (package / "helpers.py").write_text("def double(x):\n    return 2 * x\n")
    (package / "other.py").write_text("UNUSED = 1\n")
    (package / "step.py").write_text(
        "import numpy as np\n\nfrom toypkg.constants import STEP\n\nfrom .helpers import double\n\n\n"
        "def run(x):\n    return double(np.asarray(x) * STEP)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(fingerprint, "OWN_PACKAGES", (*fingerprint.OWN_PACKAGES, "toypkg"))
    _forget()
    yield package
    _forget()
    for name in [m for m in sys.modules if m.split(".")[0] == "toypkg"]:
        del sys.modules[name]


def _forget() -> None:
    fingerprint._closure.cache_clear()
    fingerprint._interface_fingerprint.cache_clear()
    fingerprint._module_names.cache_clear()
    fingerprint._source_path.cache_clear()
    importlib.invalidate_caches()


def test_fingerprint_follows_the_modules_a_step_imports_and_nothing_else(toy_package):
    sources, libraries = fingerprint._closure(("toypkg.step",))
    assert sorted(sources) == ["toypkg.constants", "toypkg.helpers", "toypkg.step"]
    assert libraries == {"numpy"}
    before = code_fingerprint("toypkg.step")

    (toy_package / "other.py").write_text("UNUSED = 2\n")
    _forget()
    assert code_fingerprint("toypkg.step") == before

    (toy_package / "constants.py").write_text("STEP = 0.1\n")
    _forget()
    after_constant = code_fingerprint("toypkg.step")
    assert after_constant != before

    (toy_package / "helpers.py").write_text("def double(x):\n    return x + x\n")
    _forget()
    assert code_fingerprint("toypkg.step") not in (before, after_constant)


def test_a_compiled_extension_counts_with_the_bytes_it_was_built_to(toy_package):
    """As brainsymphony._keystream: the step imports a built extension, whose file is not parsed as Python."""
    built = toy_package / f"fast{importlib.machinery.EXTENSION_SUFFIXES[0]}"
    built.write_bytes(b"\x7fELF one build")
    (toy_package / "step.py").write_text("try:\n    from toypkg import fast\nexcept ImportError:\n    fast = None\n")
    _forget()
    sources, _ = fingerprint._closure(("toypkg.step",))
    assert sources["toypkg.fast"] == b"\x7fELF one build"
    before = code_fingerprint("toypkg.step")
    built.write_bytes(b"\x7fELF another build")
    _forget()
    assert code_fingerprint("toypkg.step") != before
    built.unlink()  # not built: the step runs its fallback, which the fingerprint tells apart too
    _forget()
    assert "toypkg.fast" not in fingerprint._closure(("toypkg.step",))[0]
    assert code_fingerprint("toypkg.step") != before


def test_fingerprint_includes_the_versions_of_the_libraries_imported(toy_package, monkeypatch):
    before = code_fingerprint("toypkg.step")
    monkeypatch.setattr(fingerprint, "_version", lambda library: "99.0" if library == "numpy" else "")
    _forget()
    assert code_fingerprint("toypkg.step") != before


def test_a_module_outside_the_own_packages_or_a_misspelled_one_is_refused():
    with pytest.raises(ValueError, match="not \\['json.decoder'\\]"):
        code_fingerprint("json.decoder")
    with pytest.raises(ValueError, match="no source file for module 'pipelines.dmri.regster'"):
        code_fingerprint("pipelines.dmri.regster")


class _CountInput(CodeInputSpec):
    value = traits.Int(mandatory=True)


class _CountOutput(TraitedSpec):
    out_file = File(exists=True)


class _Count(FingerprintedInterface):
    """Append a line to a file beside the node folder each time it really runs."""

    implementation = ("pipelines.atomic",)
    input_spec = _CountInput
    output_spec = _CountOutput

    def _run_interface(self, runtime):
        out = Path(runtime.cwd) / "value.txt"
        out.write_text(str(self.inputs.value))
        with (Path(runtime.cwd).parent.parent / "runs.log").open("a") as log:
            log.write(f"{self.inputs.value}\n")
        self._results["out_file"] = str(out)
        return runtime


def test_a_changed_code_fingerprint_reruns_the_cached_node_and_an_unchanged_one_does_not(tmp_path):
    def run(code: str | None = None) -> None:
        node = pe.Node(_Count(value=3), name="count", base_dir=str(tmp_path / "work"))
        if code is not None:
            node.inputs.code = code
        node.run()

    run()
    run()
    assert (tmp_path / "runs.log").read_text() == "3\n", "the same code reuses the cache"
    run(code="0123456789abcdef")  # what an upgrade of pipelines.atomic or of _Count would do
    assert (tmp_path / "runs.log").read_text() == "3\n3\n"
    assert len(_Count().inputs.code) == 16 and _Count().inputs.code != "0123456789abcdef"


def test_every_pipeline_interface_fingerprints_the_modules_it_calls():
    """A new interface that is not a FingerprintedInterface would keep stale results after an upgrade."""
    from nipype.interfaces.base import BaseInterface

    found = []
    for module_name in INTERFACE_MODULES:
        module = importlib.import_module(module_name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseInterface) and cls.__module__ == module_name:
                found.append(cls)
                assert issubclass(cls, FingerprintedInterface), cls
                assert cls.implementation, f"{cls.__name__} names no implementation module"
                assert len(cls().inputs.code) == 16
    assert len(found) >= 12
    codes = {cls.__name__: cls().inputs.code for cls in found}
    assert len(set(codes.values())) == len(codes), codes


INTERFACE_MODULE = """\
import json

from nipype.interfaces.base import TraitedSpec

from pipelines.fingerprint import CodeInputSpec, FingerprintedInterface
from toypkg.helpers import double

INDENT = {indent}


def _write_json(payload, path):
    path.write_text(json.dumps(payload, indent=INDENT))


def _unused():
    return {unused}


class Step(FingerprintedInterface):
    implementation = ("toypkg.other",)
    input_spec = CodeInputSpec
    output_spec = TraitedSpec

    def _run_interface(self, runtime):
        _write_json({{"value": double(1)}}, runtime.cwd)
        return runtime
"""


def _step_code(package: Path, *, indent: int = 2, unused: int = 0, comment: str = "") -> str:
    """The ``code`` of ``toypkg.interfaces.Step`` for a version of its module."""
    (package / "interfaces.py").write_text(comment + INTERFACE_MODULE.format(indent=indent, unused=unused))
    _forget()
    sys.modules.pop("toypkg.interfaces", None)
    return importlib.import_module("toypkg.interfaces").Step().inputs.code


def test_an_interface_fingerprint_follows_the_module_helpers_it_uses_and_the_modules_it_imports_from(toy_package):
    """A sidecar writer or a constant beside the interface class is part of the step; an unused helper is not."""
    before = _step_code(toy_package)
    assert _step_code(toy_package) == before
    assert _step_code(toy_package, unused=1) == before
    assert _step_code(toy_package, comment="# a comment moves every line\n") == before
    assert _step_code(toy_package, indent=4) != before, "a constant the sidecar writer reads"

    (toy_package / "helpers.py").write_text("def double(x):\n    return x + x\n")
    assert _step_code(toy_package) != before, "a module the class imports a name from"


def test_a_module_fingerprinted_alone_counts_with_its_own_source_only(toy_package):
    """How the model stage covers bsym_cli/levels/model_stage.py without every module that one imports."""
    before = code_fingerprint("toypkg.helpers", alone=("toypkg.step",))
    (toy_package / "constants.py").write_text("STEP = 0.1\n")  # imported by step, not followed
    _forget()
    assert code_fingerprint("toypkg.helpers", alone=("toypkg.step",)) == before
    (toy_package / "step.py").write_text((toy_package / "step.py").read_text() + "# edited\n")
    _forget()
    assert code_fingerprint("toypkg.helpers", alone=("toypkg.step",)) != before


def test_the_model_stage_fingerprint_covers_the_writers_of_its_outputs_and_not_the_workflows():
    from bsym_cli.levels.model_stage import MODEL_CODE

    sources, _ = fingerprint._closure(tuple(sorted(MODEL_CODE)))
    assert {"bsym_cli.bids.derivatives", "pipelines.model.stage", "brainsymphony.perceiver"} <= set(sources)
    assert not {"pipelines.dmri.track", "pipelines.fmri.parcellate", "bsym_cli.levels.participant"} & set(sources)
