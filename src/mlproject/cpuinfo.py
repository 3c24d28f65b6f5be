"""The CPU as Linux describes it: the fields of /proc/cpuinfo, read in one place.

The kernel choice (`model.linear`: the vendor), bf16 support (`training.device`: the flags), the
matmul-peak cache key (`training.throughput`: the model name) and a run's environment record
all read the same file.
"""

from __future__ import annotations

from pathlib import Path

CPUINFO = "/proc/cpuinfo"


def cpu_fields(cpuinfo: str = CPUINFO) -> dict[str, str] | None:
    """`key: value` fields of the first processor's block (it describes every core alike), or
    None where the file cannot be read (not Linux)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the end of the first processor's block
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields
