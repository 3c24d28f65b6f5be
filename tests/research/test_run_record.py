"""The run record: capture in a real git repository, re-creating the source, and the check
of a record against the machine."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from pathlib import Path

import pytest

from mlproject.app.record import RunRecord, capture_record, data_tags
from mlproject.app.record.diff import data_changed, diff_record
from mlproject.app.record.environment import capture_environment, installed_distributions
from mlproject.app.record.materialise import import_root, materialised_source
from mlproject.app.record.source import capture_source
from mlproject.errors import MlprojectError
from mlproject.schema import Artifact, Tag

PASSWORD_URI = "postgresql://alice:hunter2secret@db.example:5432/mlflow"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A tiny project: src/pkg/{__init__,model}.py and configs/a.yaml, committed."""
    root = tmp_path / "my project"  # a space: paths from git are lines, not words
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "configs").mkdir()
    (root / "src" / "pkg" / "__init__.py").write_text("")
    (root / "src" / "pkg" / "model.py").write_text("WIDTH = 64\n")
    (root / "configs" / "a.yaml").write_text("lr: 0.001\n")
    (root / "logo.bin").write_bytes(bytes(range(256)))
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    return root


def dirty(root: Path) -> dict[str, bytes]:
    """Modify a tracked file and a binary one, add untracked files: the bytes the run saw."""
    (root / "src" / "pkg" / "model.py").write_text(f"WIDTH = 128\nSTORE = '{PASSWORD_URI}'\n")
    (root / "logo.bin").write_bytes(bytes(range(255, -1, -1)) + b"\0\1")
    (root / "src" / "pkg" / "extra.py").write_text("EXTRA = True\n")
    (root / "configs" / "b.yaml").write_text("lr: 0.01\n")
    (root / "notes.txt").write_text("outside the package and configs\n")
    (root / "src" / "pkg" / "blob.dat").write_bytes(b"\0\1\2")
    return {rel: (root / rel).read_bytes()
            for rel in ("src/pkg/model.py", "logo.bin", "src/pkg/extra.py", "configs/b.yaml")}


def test_a_dirty_tree_records_its_patch_and_small_untracked_text_files(repo):
    dirty(repo)
    src = capture_source(repo / "src" / "pkg", "0.1.0")
    assert src.commit == git(repo, "rev-parse", "HEAD").strip()
    assert src.dirty and src.package_dir == "src/pkg" and not src.reason
    assert b"WIDTH = 128" in src.patch and b"GIT binary patch" in src.patch
    listed = {f.path: f.included for f in src.untracked}
    assert listed == {"src/pkg/extra.py": True, "configs/b.yaml": True, "notes.txt": False, "src/pkg/blob.dat": False}
    assert src.untracked_text == {"src/pkg/extra.py": "EXTRA = True\n", "configs/b.yaml": "lr: 0.01\n"}


def test_credentials_in_the_patch_are_scrubbed(repo):
    dirty(repo)
    record = RunRecord(capture_source(repo / "src" / "pkg", "0.1.0"), None)
    files = record.files()
    assert b"hunter2secret" not in files[Artifact.PATCH] and b"postgresql://***@db.example" in files[Artifact.PATCH]
    assert record.source.patch_scrubbed
    assert any("credentials" in note for note in record.notes())


def test_a_clean_tree_has_no_patch(repo):
    src = capture_source(repo / "src" / "pkg", "0.1.0")
    assert not src.dirty and src.patch is None and src.untracked == []
    assert RunRecord(src, None).patch_state() == "clean"


def test_a_patch_over_the_limit_is_summarised_and_the_record_says_so(repo):
    dirty(repo)
    src = capture_source(repo / "src" / "pkg", "0.1.0", patch_limit=100)
    record = RunRecord(src, None)
    assert src.patch is None and src.patch_size > 100 and len(src.patch_sha256) == 64
    assert "src/pkg/model.py" in src.patch_summary and "logo.bin" in src.patch_summary
    assert Artifact.PATCH not in record.files() and record.patch_state() == "summarised"
    assert any("over the logging limit" in note for note in record.notes())
    with pytest.raises(MlprojectError, match="over the logging limit"):
        with materialised_source(src, repo):
            pass


def test_a_copy_outside_git_records_file_hashes_and_the_reason(tmp_path):
    package = tmp_path / "site-packages" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("X = 1\n")
    src = capture_source(package, "0.1.0")
    assert src.commit is None and "no git record" in src.reason
    assert set(src.file_hashes) == {"__init__.py"}
    (package / "__init__.py").write_text("X = 2\n")
    later = capture_source(package, "0.1.0")
    changed = diff_record(RunRecord(src, None), RunRecord(later, None))
    assert [(d.item, d.current) for d in changed if d.checked] == [("files", "1 differ: __init__.py")]


def test_an_ignored_package_inside_a_repository_is_not_that_repositorys_code(repo):
    package = repo / ".venv" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (repo / ".gitignore").write_text(".venv/\n")
    assert capture_source(package, "0.1.0").commit is None


def test_the_record_round_trips_through_its_files(repo):
    dirty(repo)
    record = capture_record(digest="abc123", tokenizer_hash="tok456", package_dir=repo / "src" / "pkg")
    back = RunRecord.from_files(record.files(), record.tags())
    assert back.source == record.source and back.environment == record.environment
    assert back.data == {Tag.DATA_DIGEST: "abc123", Tag.DATA_TOKENIZER_HASH: "tok456"}
    assert record.tags()[Tag.RECORD] == "1"
    assert diff_record(back, record) == []


def test_materialising_recreates_the_exact_source_after_the_tree_moved_on(repo):
    seen = dirty(repo)
    src = RunRecord.from_files(RunRecord(capture_source(repo / "src" / "pkg", "0.1.0"), None).files(), {}).source
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "moved on")
    (repo / "src" / "pkg" / "model.py").write_text("WIDTH = 4096\n")
    with materialised_source(src, repo) as root:
        assert import_root(root, src) == root / "src"
        got = {rel: (root / rel).read_bytes() for rel in seen}
        assert (root / "configs" / "a.yaml").read_bytes() == b"lr: 0.001\n"
        assert not (root / "notes.txt").exists()
    expected = dict(seen, **{"src/pkg/model.py": seen["src/pkg/model.py"].replace(b"alice:hunter2secret", b"***")})
    assert got == expected
    assert not root.exists()
    assert git(repo, "worktree", "list").count("\n") == 1  # the temporary worktree is gone


def test_a_commit_missing_from_the_repository_is_an_error_naming_it(repo, tmp_path):
    src = capture_source(repo / "src" / "pkg", "0.1.0")
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    with pytest.raises(MlprojectError, match=f"commit {src.commit} is not in the repository"):
        with materialised_source(src, other):
            pass


def test_an_old_run_without_a_record_lists_what_is_not_checked():
    old = RunRecord.from_files({}, {"mlflow.source.git.commit": "abc"})
    assert old.source is None and old.environment is None
    lines = [d.describe() for d in diff_record(old, capture_record(digest="d1", tokenizer_hash="t1"))]
    assert lines == ["not checked: commit (the run has no source record)",
                     "not checked: patch (the run has no source record)",
                     "not checked: packages (the run has no environment record)",
                     "not checked: device (the run has no environment record)",
                     "not checked: precision (the run has no environment record)",
                     "not checked: threads (the run has no environment record)",
                     "not checked: data digest (the run did not record it)",
                     "not checked: tokenizer (the run did not record it)"]


def test_the_check_names_each_difference_from_the_machine(repo):
    now = capture_record(digest="d1", tokenizer_hash="t1", package_dir=repo / "src" / "pkg")
    env = now.environment
    recorded = RunRecord(
        dataclasses.replace(now.source, commit="0" * 40),
        dataclasses.replace(env, distributions={**env.distributions, "numpy": "0.0.1", "gone": "1.0"},
                            threads={**env.threads, "torch_threads": "64"},
                            numerics={**env.numerics, "float32_matmul_precision": "medium"}, cpu_model="Other CPU"),
        data_tags("d0", "t1"))
    lines = [d.describe() for d in diff_record(recorded, now)]
    assert f"commit: recorded {'0' * 40}, current {now.source.commit}" in lines
    assert f"package numpy: recorded 0.0.1, current {env.distributions['numpy']}" in lines
    assert "package gone: recorded 1.0, current absent" in lines
    assert f"threads torch_threads: recorded 64, current {env.threads['torch_threads']}" in lines
    assert f"precision float32_matmul_precision: recorded medium, current {env.numerics['float32_matmul_precision']}" in lines
    assert f"device cpu: recorded Other CPU, current {env.cpu_model}" in lines
    assert "data digest: recorded d0, current d1" in lines and len(lines) == 7
    assert data_changed(diff_record(recorded, now))


def test_installed_distributions_match_importlib_metadata():
    import importlib.metadata
    import re

    slow = {}
    for dist in importlib.metadata.distributions():
        slow.setdefault(re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower(), dist.version)
    assert installed_distributions() == dict(sorted(slow.items()))
    assert installed_distributions()["torch"] == __import__("torch").__version__


def test_the_environment_records_threads_and_numerics_settings():
    import torch

    env = capture_environment()
    assert env.threads["torch_threads"] == str(torch.get_num_threads())
    assert env.numerics["float32_matmul_precision"] == torch.get_float32_matmul_precision()
    assert env.python and env.cpu_model


def test_capture_is_fast(repo):
    dirty(repo)
    capture_record(package_dir=repo / "src" / "pkg")  # warm: torch and the file system caches
    start = time.perf_counter()
    record = capture_record(package_dir=repo / "src" / "pkg")
    # 0.3 s typical; the bound leaves room for a loaded test machine
    assert time.perf_counter() - start < 2.0 and record.seconds < 2.0


def test_a_source_record_reads_the_package_version_and_commit_of_this_checkout():
    record = capture_record()
    assert record.source.package_version
    assert record.source.commit or record.source.reason
    assert Artifact.SOURCE_JSON in record.files()


def test_a_git_error_means_no_source_record_with_the_reason(repo, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no git executable at all
    record = capture_record(package_dir=repo / "src" / "pkg")
    assert record.source.commit is None and record.source.reason.startswith("no git record (git rev-parse:")
    assert record.patch_state() == "none" and record.environment is not None
    assert record.notes()[0].startswith("source: no git record")


def test_the_record_reads_back_from_a_downloaded_artifact_folder(repo, tmp_path):
    dirty(repo)
    record = capture_record(digest="abc", package_dir=repo / "src" / "pkg")
    folder = tmp_path / "artifacts"
    for rel, data in record.files().items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    back = RunRecord.from_dir(folder, record.tags())
    assert back.source == record.source and back.environment == record.environment and back.data == record.data
