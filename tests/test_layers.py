"""The package layout is the data flow: each stage imports only from the stages before it.

    ground floor (errors, io, outdir, protocol, schema, secrets, stats, config, profiles, cpuinfo) -> data
    -> model -> training -> inference -> app -> tracking (the MLflow adapters) -> research -> orchestration -> cli

Imports inside functions count too: a lazy import upward is still a cycle in the design.
Only the MLflow adapters (`tracking/`) import MLflow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mlproject"
GROUND = {"errors", "io", "outdir", "protocol", "schema", "secrets", "stats", "config", "profiles", "cpuinfo",
          "__init__"}
LAYERS = ["ground", "data", "model", "training", "inference", "app", "tracking", "research", "orchestration", "cli"]


def _layer(module: str) -> str:
    """The layer of `mlproject.<a>.<b>...` (a module path relative to the package)."""
    head = module.split(".")[0]
    if head in GROUND:
        return "ground"
    if head in ("cli", "__main__"):
        return "cli"
    return head


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"] or ["__init__"]
        out.append((".".join(parts), path))
    return out


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:
                raise AssertionError(f"{path}:{node.lineno}: use absolute imports")
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "mlproject" else [node.module]
            found += [(node.lineno, name) for name in names]
    return found


def test_the_layer_table_names_every_package():
    packages = {_layer(name) for name, _ in _modules()}
    assert packages <= set(LAYERS), f"packages missing from LAYERS: {packages - set(LAYERS)}"


@pytest.mark.parametrize("module,path", _modules(), ids=[name for name, _ in _modules()])
def test_imports_only_go_down_the_flow(module, path):
    rank = LAYERS.index(_layer(module))
    upward = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
              for line, name in _imports(path) if name.startswith("mlproject.")
              and LAYERS.index(_layer(name[len("mlproject."):])) > rank]
    assert not upward, "\n".join(upward)


def test_only_the_tracking_adapters_import_mlflow():
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{line}"
                 for module, path in _modules() if _layer(module) != "tracking"
                 for line, name in _imports(path) if name == "mlflow" or name.startswith("mlflow.")]
    assert not offenders, offenders


MAX_FUNCTION_LINES = 60  # a longer function does several things: name each part (docstring and all)


def test_no_function_is_longer_than_the_limit():
    long = []
    for _, path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}: {lines} lines")
    assert not long, "\n".join(long)


MAX_RESEARCH_FILE_LINES = 400  # a longer research module holds several concepts: split it (as sweep/ is)


def test_no_research_module_is_longer_than_the_limit():
    long = [f"{path.relative_to(PACKAGE.parent)}: {n} lines" for path in sorted((PACKAGE / "research").rglob("*.py"))
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_RESEARCH_FILE_LINES]
    assert not long, "\n".join(long)
