"""`--source record`: the recorded source re-created in a temporary git worktree.

The worktree is checked out at the recorded commit (`git worktree add --detach`), the recorded
patch is applied (`git apply`, binary hunks included) and the included untracked files are
written, so the tree holds the bytes the run was made from even after the user's own work
tree has moved on. Nothing is installed: the caller puts `import_root(...)` first on
PYTHONPATH of the process it starts. The worktree is removed when the block ends.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlproject
from mlproject.app.record.source import GitError, SourceRecord, git, repo_of
from mlproject.errors import MlprojectError


def _repository(repo: Path | None) -> Path:
    if repo is not None:
        return Path(repo).resolve()
    try:
        return repo_of(Path(mlproject.__file__).resolve().parent)[0]
    except GitError as exc:
        raise MlprojectError(f"--source record needs the package's git repository, and this copy has none "
                             f"({exc})") from None


def _check(source: SourceRecord | None, repo: Path) -> str:
    """The recorded commit, after checking that the record can be re-created from `repo`."""
    if source is None or source.commit is None:
        raise MlprojectError("the run has no git source record: --source record cannot re-create its code")
    if source.reason:
        raise MlprojectError(f"the run's source was not recorded ({source.reason})")
    if source.summarised:
        raise MlprojectError(f"the run's uncommitted patch ({source.patch_size} bytes) was over the logging limit "
                             "and only summarised: its source cannot be re-created")
    try:
        git(repo, "cat-file", "-e", f"{source.commit}^{{commit}}")
    except GitError:
        raise MlprojectError(f"commit {source.commit} is not in the repository at {repo}: fetch it "
                             "(git fetch) and try again") from None
    return source.commit


def import_root(root: Path, source: SourceRecord) -> Path:
    """The folder to put first on PYTHONPATH: the parent of the package (`src/` in this layout)."""
    return root / Path(source.package_dir).parent


@contextlib.contextmanager
def materialised_source(source: SourceRecord | None, repo: Path | None = None) -> Iterator[Path]:
    """The root of a temporary worktree holding the recorded source (removed on exit).

    `repo`: the git repository that holds the commit (default: the one this package runs from).
    """
    repo = _repository(repo)
    commit = _check(source, repo)
    assert source is not None
    tmp = Path(tempfile.mkdtemp(prefix="mlproject-source-"))
    root = tmp / "source"
    try:
        _run(repo, "worktree", "add", "--detach", "--quiet", str(root), commit)
        if source.patch:
            patch = tmp / "patch.diff"
            patch.write_bytes(source.patch)
            scrubbed = " (credentials were scrubbed from it)" if source.patch_scrubbed else ""
            _run(root, "apply", "--whitespace=nowarn", str(patch),
                 what=f"the recorded patch does not apply at commit {commit}{scrubbed}")
        for rel, text in source.untracked_text.items():
            target = (root / rel).resolve()
            if not target.is_relative_to(root.resolve()):
                raise MlprojectError(f"untracked file {rel!r} of the record lies outside the source tree")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8", newline="")
        yield root
    finally:
        with contextlib.suppress(GitError):
            git(repo, "worktree", "remove", "--force", str(root))
        shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(GitError):
            git(repo, "worktree", "prune")


def _run(where: Path, *args: str, what: str = "") -> None:
    try:
        git(where, *args)
    except GitError as exc:
        raise MlprojectError(f"{what or 'materialising the recorded source'}: {exc}") from None
