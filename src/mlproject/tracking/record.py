"""The run record (`app.record`) in MLflow: logged at the start of a run, read back by `reproduce`.

`record_run` captures the record of this process and logs it on a run: `source/` and
`environment/` as artifacts (one upload), the record version, patch state and data digests as
tags. It runs once per run: a resumed session keeps the record of the session that started
the run, whose code made its first steps. Capturing never fails a run: trouble is a note.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlproject.app.record import RunRecord, capture_record
from mlproject.schema import Tag
from mlproject.tracking import client
from mlproject.tracking.queries import artifact_files

RECORD_FOLDERS = ("source", "environment")


def log_record(run_id: str, record: RunRecord) -> None:
    """The record's files as the run's artifacts and its tags on the run."""
    with tempfile.TemporaryDirectory(prefix="mlproject-record-") as tmp:
        root = Path(tmp)
        for rel, data in record.files().items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(data, bytes):
                path.write_bytes(data)
            else:
                path.write_text(data, encoding="utf-8", newline="")
        client.client().log_artifacts(run_id, tmp)
    client.set_tags(run_id, record.tags())


def record_run(run_id: str, tags: Mapping[str, str], data_info: Mapping[str, Any] | None = None) -> None:
    """Capture and log the record on `run_id` unless it has one (`tags`: the run's current tags)."""
    if Tag.RECORD in tags:
        return
    info = data_info or {}
    try:
        record = capture_record(digest=info.get("digest"), tokenizer_hash=info.get("tokenizer_hash"))
        log_record(run_id, record)
    except Exception as exc:  # the record helps a later reproduction; it must not stop this run
        print(f"note: run {run_id} has no record: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return
    for note in record.notes():
        print(f"note: {note}", file=sys.stderr)


def load_record(run_id: str, tags: Mapping[str, str]) -> RunRecord:
    """The record logged on `run_id` (every part None for a run made before records existed)."""
    files: dict[str, bytes | str] = {}
    with tempfile.TemporaryDirectory(prefix="mlproject-record-") as tmp:
        for folder in RECORD_FOLDERS:
            if not artifact_files(run_id, folder) and not _has_subfolders(run_id, folder):
                continue
            local = Path(client.client().download_artifacts(run_id, folder, tmp))
            files.update({f"{folder}/{p.relative_to(local).as_posix()}": p.read_bytes()
                          for p in sorted(local.rglob("*")) if p.is_file()})
    return RunRecord.from_files(files, tags)


def _has_subfolders(run_id: str, folder: str) -> bool:
    try:
        return any(f.is_dir for f in client.client().list_artifacts(run_id, folder))
    except Exception:  # no such folder
        return False
