"""The documentation stays true: every `mlproject` command that README.md and docs/*.md show
parses with the CLI's own parser, every `make` target they name is in the Makefile, every
repository path they name exists, and every page is in the site's navigation."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mlproject.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`]+)`")  # a code span may wrap over lines, as Markdown allows
SHELL_OPERATORS = {"|", "||", "&", "&&", ";", ">", ">>", "<", "(", ")"}
# Paths from the repository root, and paths inside the package (`tracking/client.py`).
REPO_PATH = re.compile(r"^(configs|src|docker|airflow|benchmarks|tests|docs|\.ci)/[\w./*-]*$")
PACKAGE_PATH = re.compile(r"^(data|model|training|inference|app|tracking|research|orchestration)/[\w/]+\.py$")
MAKE_TARGET = re.compile(r"^([A-Za-z0-9_.-]+(?:[ \t]+[A-Za-z0-9_.-]+)*)[ \t]*:(?!=)", re.M)
LOCAL_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
# Paths of the original suite that the migration page names beside today's.
ORIGINAL_SUITE_PATHS = {"orchestration/airflow/dags/gpt_research_pipeline.py"}


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _fenced_lines(text: str) -> Iterator[str]:
    """The lines of the fenced code blocks, continuation lines (`\\`) joined."""
    for block in FENCE.findall(text):
        yield from block.replace("\\\n", " ").splitlines()


def _spans(text: str) -> Iterator[str]:
    """The inline code spans outside fenced blocks, whitespace collapsed, `\\|` of tables unescaped."""
    for span in INLINE.findall(FENCE.sub("", text)):
        yield " ".join(span.replace("\\|", "|").split())


def _tokens(line: str) -> list[str]:
    """A shell line as words and operators, comments dropped (prose in a text block: its words)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:  # an apostrophe in a layout listing, not a shell line
        return line.split()


def _mlproject_argv(tokens: list[str]) -> list[str] | None:
    """The arguments after `mlproject` (`-m mlproject`, `.venv/bin/mlproject`) up to a shell operator."""
    for i, token in enumerate(tokens):
        starts_command = i == 0 or tokens[i - 1] in ("-m", *SHELL_OPERATORS) or all("=" in t for t in tokens[:i])
        if (token == "mlproject" or token.endswith("/mlproject")) and starts_command:
            rest = tokens[i + 1:]
            end = next((j for j, t in enumerate(rest) if t in SHELL_OPERATORS), len(rest))
            return rest[:end]
    return None


def documented_commands() -> list[tuple[str, list[str]]]:
    """(page, argv) of every `mlproject` command in a code block or a code span."""
    found = []
    for page in PAGES:
        text = _text(page)
        lines = list(_fenced_lines(text)) + [s for s in _spans(text) if s.startswith("mlproject ")]
        for line in lines:
            argv = _mlproject_argv(_tokens(line))
            if argv:
                found.append((page.name, argv))
    return found


def _variants(argv: list[str]) -> list[list[str]]:
    """`[--flag VALUE]` marks an optional part: the command with it and without it."""
    with_optional, without, depth = [], [], 0
    for token in argv:
        depth += token.startswith("[")
        bare = token.strip("[]")
        with_optional.append(bare)
        if depth == 0:
            without.append(bare)
        depth -= token.endswith("]")
    return [with_optional, without] if with_optional != without else [argv]


def _parse_error(argv: list[str]) -> str | None:
    """The parser's complaint about `argv` (None when it parses); the handler never runs."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits 0 after --help, 2 on a usage error
        return None if exc.code == 0 else err.getvalue().strip().splitlines()[-1]
    return None


def test_the_readme_shows_an_example_of_every_step():
    shown = {argv[0] for page, argv in documented_commands() if page == "README.md"}
    action = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(action.choices) <= shown, f"no example in the README for {set(action.choices) - shown}"


def test_every_documented_mlproject_command_parses():
    failures = []
    for page, argv in documented_commands():
        # A placeholder such as `mlproject train ...` or `--rdzv-endpoint <host>:29500` stands for
        # the user's own arguments: there is nothing definite to parse.
        if any("<" in token or "..." in token for token in argv):
            continue
        if len(argv) == 1:  # a step named in prose (`mlproject pipeline` runs ...): it must exist
            argv = [argv[0], "--help"]
        for variant in _variants(argv):
            error = _parse_error(variant)
            if error:
                failures.append(f"{page}: mlproject {shlex.join(variant)}: {error}")
            missing = [t for t in variant if REPO_PATH.match(t) and not _exists(t)]
            failures += [f"{page}: mlproject {shlex.join(variant)}: no file {path}" for path in missing]
    assert not failures, "\n".join(failures)


def test_no_page_trains_a_planned_child_with_run_id():
    # train refuses --run-id (it names a source run in generate/evaluate): the child is --child-run-id
    pages = [*PAGES, REPO / "airflow" / "README.md", REPO / "MLproject"]
    stale = [f"{page.name}: {m.group()}" for page in pages
             for m in re.finditer(r"train (?:\S+ )*?--run[-_]id\b|-e train\b.*-P run_id=", _text(page))]
    assert not stale, "\n".join(stale)


def _make_targets() -> set[str]:
    return {name for names in MAKE_TARGET.findall(_text(REPO / "Makefile")) for name in names.split()}


def documented_make_targets() -> list[tuple[str, str]]:
    """(page, target) of every `make TARGET` in a code block or a code span."""
    found = []
    for page in PAGES:
        text = _text(page)
        for line in [*_fenced_lines(text), *_spans(text)]:
            tokens = _tokens(line)
            if tokens[:1] == ["make"]:
                target = next((t for t in tokens[1:] if not t.startswith("-") and "=" not in t), None)
                if target:
                    found.append((page.name, target))
    return found


def test_every_documented_make_target_is_in_the_makefile():
    targets = _make_targets()
    documented = documented_make_targets()
    assert {"run", "test", "test-all", "docs"} <= {target for _, target in documented}
    missing = [f"{page}: make {target}" for page, target in documented if target not in targets]
    assert not missing, f"not in the Makefile: {missing}"


def _exists(path: str) -> bool:
    return any(REPO.glob(path.rstrip("/"))) if "*" in path else (REPO / path).exists()


def test_every_repository_path_the_docs_name_exists():
    checked, missing = 0, []
    for page in PAGES:
        for span in _spans(_text(page)):
            if span in ORIGINAL_SUITE_PATHS:
                continue
            if REPO_PATH.match(span):
                path = span
            elif PACKAGE_PATH.match(span):
                path = f"src/mlproject/{span}"
            else:
                continue
            checked += 1
            if not _exists(path):
                missing.append(f"{page.name}: {span}")
    assert checked > 20, "the path pattern no longer finds the paths the docs name"
    assert not missing, f"no such file or folder: {missing}"


def test_every_local_link_of_the_readme_exists():
    links = [link for link in LOCAL_LINK.findall(_text(REPO / "README.md")) if "://" not in link]
    assert links, "the README links to no page"
    assert [link for link in links if not (REPO / link).exists()] == []


def test_every_documented_mlflow_run_entry_point_is_in_the_mlproject_file():
    entry_points = set(yaml.safe_load(_text(REPO / "MLproject"))["entry_points"])
    documented = []
    for page in PAGES:
        text = _text(page)
        for line in [*_fenced_lines(text), *_spans(text)]:
            tokens = _tokens(line)
            documented += [(page.name, tokens[i + 1]) for i, token in enumerate(tokens[:-1])
                           if token == "-e" and any(t.endswith("mlflow") for t in tokens[:i]) and "<" not in tokens[i + 1]]
    assert {"pipeline", "compare"} <= {name for _, name in documented}
    assert [(page, name) for page, name in documented if name not in entry_points] == []


def _nav_pages(entries: list) -> Iterator[str]:
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        if isinstance(value, list):
            yield from _nav_pages(value)
        else:
            yield value


def test_the_site_navigation_lists_every_page_once():
    nav = list(_nav_pages(yaml.safe_load(_text(REPO / "mkdocs.yml"))["nav"]))
    assert sorted(nav) == sorted(p.name for p in PAGES if p.parent.name == "docs")


@pytest.mark.parametrize("argv, bad", [(["train", "--no-such-flag"], "--no-such-flag"),
                                       (["no-such-step"], "no-such-step")])
def test_a_command_the_parser_refuses_is_reported_with_its_reason(argv, bad):
    assert bad in _parse_error(argv)


def test_the_migration_page_shows_the_original_defaults_and_flags_as_the_code_has_them():
    # Regenerate with mlproject.profiles.defaults_table / flags_table when the code changes.
    from mlproject.cli import COMMANDS
    from mlproject.profiles import defaults_table, flags_table

    text = _text(REPO / "docs" / "migration.md")
    tables = {name: text.split(f"<!-- {name}-table:start -->\n", 1)[1].split(f"<!-- {name}-table:end -->")[0]
              for name in ("defaults", "flags")}
    assert tables["defaults"] == defaults_table({name: c.sections for name, c in COMMANDS.items()})
    assert tables["flags"] == flags_table()
