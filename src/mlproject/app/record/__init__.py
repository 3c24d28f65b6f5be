"""A run's record: everything its numbers depend on, captured at its start, so it can be re-made.

- `source/`: the commit, the uncommitted change (`patch.diff`), the untracked files, the
  package version, or the file hashes of a copy installed outside git (`source.py`);
- `environment/`: installed distributions, versions, CPU/GPU, threads, numerics switches
  (`environment.py`);
- the data: the token cache digest and the tokenizer hash, as tags (`data_tags`).

`RunRecord.files()` gives the artifacts ({relative path: bytes | text}) and `RunRecord.tags()`
the tags; `RunRecord.from_files` reads them back (a run made before the record has neither,
and every part is None). `diff.diff_record` compares a record with this machine and
`materialise.materialised_source` re-creates the recorded source. Nothing here imports MLflow:
the tracker logs what these functions return.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import mlproject
from mlproject.app.record.environment import EnvironmentRecord, capture_environment
from mlproject.app.record.source import PATCH_LIMIT, SourceRecord, UntrackedFile, capture_source
from mlproject.schema import Artifact, PatchState, Tag
from mlproject.secrets import scrub

RECORD_VERSION = 1  # the value of Tag.RECORD

Files = Mapping[str, "bytes | str"]


def data_tags(digest: str | None, tokenizer_hash: str | None) -> dict[str, str]:
    """The data tags a reproduction checks: `PreparedData.info["digest"]` (sha256 over the
    tokenizer hash and both token caches' content hashes) and `info["tokenizer_hash"]`."""
    tags = {Tag.DATA_DIGEST: digest, Tag.DATA_TOKENIZER_HASH: tokenizer_hash}
    return {key: str(value) for key, value in tags.items() if value}


@dataclass
class RunRecord:
    """The record of one run; a part is None when it was not captured (or the run predates it)."""

    source: SourceRecord | None
    environment: EnvironmentRecord | None
    data: dict[str, str] = field(default_factory=dict)  # data_tags()
    seconds: float = 0.0  # time the capture took

    def patch_state(self) -> str:
        src = self.source
        if src is None or src.commit is None or src.reason:
            return PatchState.NONE
        if src.summarised:
            return PatchState.SUMMARISED
        return PatchState.LOGGED if src.dirty or src.untracked_text else PatchState.CLEAN

    def notes(self) -> list[str]:
        """One line per thing a reader of the run must know about its record."""
        src, notes = self.source, []
        if src is not None and src.reason:
            notes.append(f"source: {src.reason}" + (f"; {len(src.file_hashes)} file hashes recorded"
                                                    if src.file_hashes else ""))
        if src is not None and src.summarised:
            notes.append(f"source: the uncommitted patch is {src.patch_size} bytes, over the logging limit: "
                         f"only its diffstat and sha256 ({src.patch_sha256[:12]}) are recorded, so "
                         "`--source record` cannot re-create it")
        if src is not None and src.patch_scrubbed:
            notes.append("source: credentials in the patch were replaced by ***")
        return notes

    def tags(self) -> dict[str, str]:
        return {Tag.RECORD: str(RECORD_VERSION), Tag.RECORD_PATCH: self.patch_state(), **self.data}

    def files(self) -> dict[str, bytes | str]:
        """The record's artifacts by path; every text scrubbed of credentials."""
        out: dict[str, bytes | str] = {}
        if self.source is not None:
            out.update(_source_files(self.source))
        if self.environment is not None:
            env = asdict(self.environment)
            dists = env.pop("distributions")
            out[Artifact.REQUIREMENTS] = "".join(f"{name}=={version}\n" for name, version in dists.items())
            out[Artifact.ENVIRONMENT_JSON] = json.dumps(env, indent=1)
        return {path: scrub(data) if isinstance(data, str) else data for path, data in out.items()}

    @classmethod
    def from_files(cls, files: Files, tags: Mapping[str, str]) -> RunRecord:
        """The record logged as `files()` and `tags()` (parts absent from an older run are None)."""
        data = {key: str(tags[key]) for key in (Tag.DATA_DIGEST, Tag.DATA_TOKENIZER_HASH) if tags.get(key)}
        return cls(_read_source(files), _read_environment(files), data)

    @classmethod
    def from_dir(cls, root: Path, tags: Mapping[str, str]) -> RunRecord:
        """`from_files` over a downloaded artifact folder holding `source/` and `environment/`."""
        files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
        return cls.from_files(files, tags)


def _source_files(src: SourceRecord) -> dict[str, bytes | str]:
    manifest = asdict(src)
    for key in ("patch", "untracked_text"):
        manifest.pop(key)
    out: dict[str, bytes | str] = {Artifact.SOURCE_JSON: json.dumps(manifest, indent=1)}
    if src.patch is not None:
        out[Artifact.PATCH] = src.patch
    if src.summarised:
        out[Artifact.PATCH_SUMMARY] = src.patch_summary
    out.update({Artifact.UNTRACKED + rel: text for rel, text in src.untracked_text.items()})
    return out


def _text(data: bytes | str) -> str:
    return data.decode("utf-8") if isinstance(data, bytes) else data


def _read_source(files: Files) -> SourceRecord | None:
    if Artifact.SOURCE_JSON not in files:
        return None
    manifest = json.loads(_text(files[Artifact.SOURCE_JSON]))
    manifest["untracked"] = [UntrackedFile(**entry) for entry in manifest.get("untracked", [])]
    patch = files.get(Artifact.PATCH)
    manifest["patch"] = patch.encode("utf-8", "surrogateescape") if isinstance(patch, str) else patch
    manifest["untracked_text"] = {path[len(Artifact.UNTRACKED):]: _text(data) for path, data in files.items()
                                  if path.startswith(Artifact.UNTRACKED)}
    return SourceRecord(**_known(SourceRecord, manifest))


def _read_environment(files: Files) -> EnvironmentRecord | None:
    if Artifact.ENVIRONMENT_JSON not in files:
        return None
    env = json.loads(_text(files[Artifact.ENVIRONMENT_JSON]))
    lines = _text(files.get(Artifact.REQUIREMENTS, "")).splitlines()
    env["distributions"] = dict(line.split("==", 1) for line in lines if "==" in line)
    return EnvironmentRecord(**_known(EnvironmentRecord, env))


def _known(cls: type, values: dict) -> dict:
    """The entries `cls` has fields for: a record written by a later version still reads."""
    names = {f.name for f in fields(cls)}
    return {key: value for key, value in values.items() if key in names}


def package_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("mlproject")
    except importlib.metadata.PackageNotFoundError:
        return mlproject.__version__


def capture_record(*, digest: str | None = None, tokenizer_hash: str | None = None,
                   package_dir: Path | None = None, patch_limit: int = PATCH_LIMIT) -> RunRecord:
    """The record of this process: the source of `package_dir` (default: this package), the
    environment, the data tags. Never raises for git trouble (the source part says why)."""
    start = time.perf_counter()
    where = package_dir or Path(mlproject.__file__).resolve().parent
    source = capture_source(where, package_version(), patch_limit=patch_limit)
    record = RunRecord(source, capture_environment(), data_tags(digest, tokenizer_hash))
    record.seconds = time.perf_counter() - start
    return record
