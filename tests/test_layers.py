"""The package layers: ``bsym_cli -> simulation -> pipelines -> brainsymphony``, and no import circles.

Read from the source with ``ast`` (nothing is imported), so a violation fails here, not at a user's run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGES = ("bsym_cli", "simulation", "pipelines", "brainsymphony")
#: What each package may import, besides itself and third-party libraries.
ALLOWED = {
    "bsym_cli": {"simulation", "pipelines", "brainsymphony"},
    "simulation": {"pipelines"},
    "pipelines": {"brainsymphony"},
    "brainsymphony": set(),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level) for every import of our packages in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] in PACKAGES:
                found.append((name, id(node) in top))
    return found


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_the_layers_below_it(package):
    wrong = sorted(
        {
            f"{module} imports {name}"
            for module, path in _sources().items()
            if module.startswith(package)
            for name, _ in _imports(path)
            if name.split(".")[0] not in ALLOWED[package] | {package}
        }
    )
    assert not wrong


def test_private_modules_are_imported_only_inside_their_package():
    sources = _sources()
    wrong = []
    for module, path in sources.items():
        for name, _ in _imports(path):
            parts = name.split(".")
            private = next(
                (i for i, part in enumerate(parts) if part.startswith("_") and not part.startswith("__")), None
            )
            if private is None:
                continue
            # a private module is private to its package; a private name to its module's package
            is_module = ".".join(parts[: private + 1]) in sources
            scope = ".".join(parts[:private] if is_module else parts[: max(private - 1, 1)])
            if not module.startswith(scope):
                wrong.append(f"{module} imports {name}")
    assert not wrong


def test_no_import_circles_between_modules():
    sources = _sources()
    graph = {
        module: {name for name, top in _imports(path) if top and name in sources and name != module}
        for module, path in sources.items()
    }
    # a package's __init__ re-exporting its modules is not a circle of concepts
    graph = {
        m: {n for n in targets if not (m.startswith(n + ".") or n.startswith(m + "."))} for m, targets in graph.items()
    }
    state: dict[str, int] = {}
    circles = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles
