"""Fingerprints of the code behind a step, so that a rerun after an upgrade recomputes what the upgrade changed.

Nipype reuses a node's cached result when the hash of its inputs is unchanged, and a module constant (a
registration stage list, a step length) is not an input. Every bsym interface is therefore a
:class:`FingerprintedInterface`: its hashed ``code`` input is :func:`code_fingerprint` of the modules it runs
(their source, the source of every ``pipelines``, ``brainsymphony`` and ``bsym_cli`` module they import,
transitively, the built file of a compiled extension among them, and the versions of the libraries those
import) and of the interface class itself with the module-level helpers, constants and imports it uses.
Editing the tracker reruns tracking and what follows from it; the BOLD steps stay cached.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Iterable
from functools import lru_cache
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any

from nipype.interfaces.base import BaseInterfaceInputSpec, SimpleInterface, traits

#: Packages whose source is part of a fingerprint; any other import contributes its installed version.
OWN_PACKAGES = ("pipelines", "brainsymphony", "bsym_cli")


def code_fingerprint(*modules: str, alone: tuple[str, ...] = ()) -> str:
    """sha256 of the source of ``modules`` and of the own modules they import, plus their libraries' versions.

    Parameters
    ----------
    modules : str
        Dotted names of modules of :data:`OWN_PACKAGES`.
    alone : tuple of str
        Modules whose own source is included without following their imports (a command-line module that
        imports the whole application but whose own code matters).

    Returns
    -------
    str
        16 hex digits; a comment edited in any of the modules changes it too.
    """
    sources, libraries = _closure(tuple(sorted(modules)))
    sources = {**sources, **{name: _source_of(name) for name in alone}}
    digest = hashlib.sha256()
    for name in sorted(sources):
        digest.update(name.encode() + b"\0" + sources[name] + b"\0")
    _add_versions(digest, libraries)
    return digest.hexdigest()[:16]


def _add_versions(digest: Any, libraries: Iterable[str]) -> None:
    """Add ``library==version`` of each library, in order, to a hashlib digest."""
    for library in sorted(libraries):
        digest.update(f"{library}=={_version(library)}\0".encode())


class CodeInputSpec(BaseInterfaceInputSpec):
    """Input spec with the hashed ``code`` input that :class:`FingerprintedInterface` fills in."""

    code = traits.Str(desc="fingerprint of the code the step runs, set by the interface: a change reruns the step")


class FingerprintedInterface(SimpleInterface):
    """A ``SimpleInterface`` whose ``code`` input fingerprints :attr:`implementation` and the class's own code.

    Subclasses name the modules they call in ``implementation`` and use an input spec derived from
    :class:`CodeInputSpec`. The class's own code is its definition plus every module-level definition of its
    module that it uses, transitively (input specs, helpers such as a writer of JSON sidecars, constants), and
    the modules or libraries whose names it imports.
    """

    implementation: tuple[str, ...] = ()

    def __init__(self, **inputs: Any) -> None:
        super().__init__(**inputs)
        cls = type(self)
        self.inputs.code = _interface_fingerprint(self.implementation, cls.__module__, cls.__qualname__)


@lru_cache
def _interface_fingerprint(implementation: tuple[str, ...], module: str, name: str) -> str:
    """:func:`code_fingerprint` of an interface's implementation and of the modules its own code imports names
    from, with the syntax of that code and the versions of the libraries it names."""
    definitions, imported = _used_definitions(module, name)
    own = tuple(found for used in imported if _is_own(used) and (found := _module_named(used)))
    digest = hashlib.sha256(code_fingerprint(*implementation, *own).encode())
    digest.update(definitions.encode())
    _add_versions(digest, {used.split(".")[0] for used in imported} - set(OWN_PACKAGES) - sys.stdlib_module_names)
    return digest.hexdigest()[:16]


def _used_definitions(module: str, name: str) -> tuple[str, list[str]]:
    """The syntax (``ast.dump``, without positions or comments) of the module-level definition ``name`` of
    ``module`` and of the module-level definitions it uses, transitively, and the absolute names that code
    imports from elsewhere."""
    definitions, imports = _module_names(module)
    dumps, imported, seen, pending = [], [], set(), [name]
    while pending:
        used = pending.pop()
        if used in seen:
            continue
        seen.add(used)
        if used in definitions:
            dumps.append(ast.dump(definitions[used]))
            pending.extend(node.id for node in ast.walk(definitions[used]) if isinstance(node, ast.Name))
        elif used in imports:
            imported.append(imports[used])
    return "\n".join(sorted(set(dumps))), sorted(imported)


@lru_cache
def _module_names(module: str) -> tuple[dict[str, ast.stmt], dict[str, str]]:
    """A module's top-level definitions (name -> statement) and imported names (local name -> absolute name),
    parsed once per module for all the interfaces it defines."""
    tree = ast.parse(_source_of(module))
    path = _source_path(module)
    package = module if path is not None and path.name == "__init__.py" else module.rpartition(".")[0]
    definitions: dict[str, ast.stmt] = {}
    imports: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            definitions[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                definitions.update((name.id, node) for name in ast.walk(target) if isinstance(name, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            imports.update(_bindings(node, package))
    return definitions, imports


def _source_of(module: str) -> bytes:
    """Source bytes of an importable module; ValueError when it has no source file (or is misspelled)."""
    path = _source_path(module)
    if path is None:
        raise ValueError(f"no source file for module {module!r}")
    return path.read_bytes()


def _bindings(node: ast.Import | ast.ImportFrom, package: str) -> list[tuple[str, str]]:
    """(local name, absolute dotted name) of each name an import statement binds."""
    if isinstance(node, ast.Import):  # ``import a.b`` binds a; ``import a.b as c`` binds c to a.b
        return [(alias.asname, alias.name) if alias.asname else (alias.name.split(".")[0],) * 2 for alias in node.names]
    base = _absolute_base(node, package)
    return [(alias.asname or alias.name, f"{base}.{alias.name}") for alias in node.names]


def _absolute_base(node: ast.ImportFrom, package: str) -> str:
    """The absolute module of a ``from ... import`` statement inside ``package``."""
    base = node.module or ""
    if node.level:
        parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        base = f"{parent}.{base}" if base else parent
    return base


def _is_own(name: str) -> bool:
    return name.split(".")[0] in OWN_PACKAGES


@lru_cache
def _closure(modules: tuple[str, ...]) -> tuple[dict[str, bytes], frozenset[str]]:
    """Sources of ``modules`` and the own modules they import (name -> bytes), and the libraries they import."""
    outside = [name for name in modules if name.split(".")[0] not in OWN_PACKAGES]
    if outside:
        raise ValueError(f"fingerprints cover the modules of {OWN_PACKAGES}, not {outside}")
    sources: dict[str, bytes] = {}
    libraries: set[str] = set()
    pending = list(modules)
    while pending:
        name = pending.pop()
        if name in sources:
            continue
        sources[name] = _source_of(name)
        path = _source_path(name)
        if path is None or path.suffix != ".py":  # a compiled extension: its bytes, and it imports nothing of ours
            continue
        for imported in _imports(sources[name], name, is_package=path.name == "__init__.py"):
            top = imported.split(".")[0]
            if top in OWN_PACKAGES and (module := _module_named(imported)):
                pending.append(module)
            elif top not in sys.stdlib_module_names and top != "__future__":
                libraries.add(top)
    return sources, frozenset(libraries)


def _imports(source: bytes, module: str, *, is_package: bool) -> list[str]:
    """Absolute names imported by a module's source, ``from a import b`` given as both ``a`` and ``a.b``."""
    package = module if is_package else module.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute_base(node, package)
            names.append(base)
            names.extend(f"{base}.{alias.name}" for alias in node.names)
    return names


def _module_named(name: str) -> str | None:
    """The module ``name`` names: itself, or its longest prefix with a source file (``a.b.func`` gives ``a.b``)."""
    parts = name.split(".")
    prefixes = (".".join(parts[:i]) for i in range(len(parts), 0, -1))
    return next((prefix for prefix in prefixes if _source_path(prefix)), None)


@lru_cache
def _source_path(name: str) -> Path | None:
    """Source file of an importable module (the built file of a compiled extension, which setup.py makes
    byte-for-byte reproducible), or None for a name that is not a module (a function, a class)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith((".py", *EXTENSION_SUFFIXES)):
        return None
    return Path(spec.origin)


@lru_cache
def _distributions() -> dict[str, list[str]]:
    """Top-level package -> the distributions that install it."""
    return dict(importlib.metadata.packages_distributions())


def _version(library: str) -> str:
    """Installed version of the distribution(s) providing top-level package ``library``, or '' when unknown."""
    distributions = _distributions().get(library, [])
    versions = []
    for distribution in sorted(set(distributions)):
        try:
            versions.append(importlib.metadata.version(distribution))
        except importlib.metadata.PackageNotFoundError:
            continue
    return ",".join(versions)
