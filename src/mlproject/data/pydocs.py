"""`pydocs`: an offline corpus of English prose that every Python installation carries.

Documents, in a fixed order:
1. one per standard-library module: its module, class and function docstrings in source order,
   read with `ast` from the source files WITHOUT importing anything (importing every module is
   slow and some have side effects); files are walked in sorted order, test packages skipped;
2. one per topic of the interpreter's help system (`pydoc_data/topics.py`: reference-manual prose).

About 2 MB; identical for a given Python version and standard library. Built once into the cache
directory as JSONL (atomic), in a couple of seconds.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from mlproject.io import atomic_write_bytes

CORPUS_VERSION = 1
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"}
_DOC_NODES = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def corpus_name() -> str:
    """File name of the corpus for this interpreter (it differs between Python versions)."""
    return f"pydocs-py{sys.version_info.major}.{sys.version_info.minor}-v{CORPUS_VERSION}.jsonl"


def _stdlib_sources(root: Path) -> list[Path]:
    """The standard library's .py files, sorted by relative path, test packages left out."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("test")]
        files += [Path(dirpath) / f for f in filenames if f.endswith(".py") and not f.startswith("test")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _docstrings(node: ast.AST) -> Iterator[str]:
    """Docstrings of `node` and of the classes and functions nested in it, in source order."""
    if isinstance(node, (ast.Module, *_DOC_NODES)):
        doc = ast.get_docstring(node, clean=True)
        if doc and doc.strip():
            yield doc.strip()
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.stmt):  # definitions can sit inside if/try/with blocks
            yield from _docstrings(child)


def _module_documents(root: Path) -> Iterator[dict[str, str]]:
    for path in _stdlib_sources(root):
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, OSError):  # e.g. lib2to3 fixtures in Python 2 syntax
            continue
        parts = list(_docstrings(tree))
        if parts:
            name = path.relative_to(root).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
            yield {"id": name, "text": "\n\n".join(parts)}


def _topic_documents(root: Path) -> Iterator[dict[str, str]]:
    path = root / "pydoc_data" / "topics.py"
    if not path.is_file():
        return
    for node in ast.parse(path.read_bytes()).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            for key, value in zip(node.value.keys, node.value.values):
                if isinstance(key, ast.Constant) and isinstance(value, ast.Constant) and str(value.value).strip():
                    yield {"id": f"topic:{key.value}", "text": str(value.value).strip()}


def iter_pydocs(stdlib: str | Path | None = None) -> Iterator[dict[str, str]]:
    """The corpus documents ({"id", "text"}), built on the fly from the standard library sources."""
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    yield from _module_documents(root)
    yield from _topic_documents(root)


def build_pydocs(cache_root: str | Path) -> Path:
    """The corpus file under `cache_root/corpora/`, built (atomically) if it is not there yet."""
    path = Path(cache_root) / "corpora" / corpus_name()
    if not path.is_file():
        lines = [json.dumps(doc, ensure_ascii=False) for doc in iter_pydocs()]
        atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))
    return path


def read_pydocs(path: str | Path) -> Iterator[str]:
    """Document texts of a built corpus file."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)["text"]
