"""A recorded run against this machine: every difference that can change the numbers.

Each `Difference` is one line a user reads before trusting a reproduction: the commit, the
patch, an untracked file, a package version, the device, a precision switch, a thread count,
the data. A part the record lacks (a run made before records existed) gives "not checked"
items instead of silence, so a clean report never means "nothing was compared".
"""

from __future__ import annotations

from dataclasses import dataclass

from mlproject.app.record import RunRecord
from mlproject.app.record.environment import EnvironmentRecord
from mlproject.app.record.source import SourceRecord
from mlproject.schema import Tag

ABSENT = "absent"


@dataclass(frozen=True)
class Difference:
    """`item` (commit, patch, untracked, files, package, version, device, precision, threads,
    data digest, tokenizer) of `name` (a package, a setting) recorded vs current."""

    item: str
    recorded: str = ""
    current: str = ""
    name: str = ""
    checked: bool = True
    why: str = ""  # for an unchecked item: why not

    def describe(self) -> str:
        what = f"{self.item} {self.name}" if self.name else self.item
        if not self.checked:
            return f"not checked: {what} ({self.why})"
        return f"{what}: recorded {self.recorded}, current {self.current}"


def diff_record(recorded: RunRecord, current: RunRecord) -> list[Difference]:
    """The differences between a run's record and `current` (this machine's `capture_record`)."""
    return [*_diff_source(recorded.source, current.source),
            *_diff_environment(recorded.environment, current.environment),
            *_diff_data(recorded.data, current.data)]


def _unchecked(items: tuple[str, ...], why: str) -> list[Difference]:
    return [Difference(item, checked=False, why=why) for item in items]


def _changed(item: str, recorded: object, current: object, name: str = "") -> list[Difference]:
    return [] if recorded == current else [Difference(item, str(recorded), str(current), name)]


def _diff_source(rec: SourceRecord | None, cur: SourceRecord | None) -> list[Difference]:
    if rec is None:
        return _unchecked(("commit", "patch"), "the run has no source record")
    out = _changed("version", rec.package_version, cur.package_version if cur else ABSENT, "mlproject")
    if rec.commit is None:  # an installed copy: its files were hashed
        return out + _diff_hashes(rec.file_hashes, cur.file_hashes if cur and cur.commit is None else None)
    if cur is None or cur.commit is None:
        return out + _unchecked(("commit", "patch"), "this copy of the package is not a git work tree")
    out += _changed("commit", rec.commit, cur.commit)
    if rec.reason or cur.reason:
        return out + _unchecked(("patch",), rec.reason or cur.reason)
    out += _changed("patch", _patch_id(rec), _patch_id(cur))
    recorded_files = {f.path: f.sha256 for f in rec.untracked if f.included}
    current_files = {f.path: f.sha256 for f in cur.untracked if f.included}
    for path in sorted(recorded_files.keys() | current_files.keys()):
        out += _changed("untracked", _short(recorded_files.get(path)), _short(current_files.get(path)), path)
    return out


def _patch_id(src: SourceRecord) -> str:
    return f"sha256 {src.patch_sha256[:12]} ({src.patch_size} bytes)" if src.dirty else "clean tree"


def _short(sha: str | None) -> str:
    return f"sha256 {sha[:12]}" if sha else ABSENT


def _diff_hashes(recorded: dict[str, str], current: dict[str, str] | None) -> list[Difference]:
    if current is None:
        return _unchecked(("files",), "the run came from an installed copy; this one is a git work tree")
    changed = sorted(path for path in recorded.keys() | current.keys() if recorded.get(path) != current.get(path))
    if not changed:
        return []
    shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    return [Difference("files", f"{len(recorded)} files", f"{len(changed)} differ: {shown}")]


def _diff_environment(rec: EnvironmentRecord | None, cur: EnvironmentRecord | None) -> list[Difference]:
    if rec is None or cur is None:
        return _unchecked(("packages", "device", "precision", "threads"), "the run has no environment record")
    out: list[Difference] = []
    for name in sorted(rec.distributions.keys() | cur.distributions.keys()):
        out += _changed("package", rec.distributions.get(name, ABSENT), cur.distributions.get(name, ABSENT), name)
    for name in ("python", "torch", "cuda", "cudnn"):
        out += _changed("version", getattr(rec, name), getattr(cur, name), name)
    out += _changed("device", rec.cpu_model, cur.cpu_model, "cpu")
    out += _changed("device", ", ".join(rec.gpus) or "none", ", ".join(cur.gpus) or "none", "gpus")
    out += _changed("precision", rec.cpu_bf16, cur.cpu_bf16, "cpu_bf16")
    for name in sorted(rec.numerics.keys() | cur.numerics.keys()):
        out += _changed("precision", rec.numerics.get(name, ABSENT), cur.numerics.get(name, ABSENT), name)
    for name in sorted(rec.threads.keys() | cur.threads.keys()):
        out += _changed("threads", rec.threads.get(name, ABSENT), cur.threads.get(name, ABSENT), name)
    return out


def _diff_data(rec: dict[str, str], cur: dict[str, str]) -> list[Difference]:
    out: list[Difference] = []
    for item, key in (("data digest", Tag.DATA_DIGEST), ("tokenizer", Tag.DATA_TOKENIZER_HASH)):
        if key not in rec:
            out += _unchecked((item,), "the run did not record it")
        elif key not in cur:
            out += _unchecked((item,), "not computed on this machine")
        else:
            out += _changed(item, rec[key], cur[key])
    return out


def data_changed(differences: list[Difference]) -> bool:
    """True when the data digest or tokenizer was checked and differs (a reproduction refuses)."""
    return any(d.checked and d.item in ("data digest", "tokenizer") for d in differences)
