"""Local copies of what a run logged: opt-in files beside the MLflow runs that hold the real data.

The original `scripts/*.py` wrote their outputs to fixed local paths, and its README chains
commands through them (`plot --results research_runs/compare/<name>/results.jsonl`,
`generate --checkpoint checkpoints/<run-name>.last.pt`). Here every output is an MLflow
artifact first, and a command writes nothing into the working directory unless asked
(`mlflow run .` runs in the project: it must stay clean). This module mirrors the files those
commands read, when asked:

    research_runs/compare/<experiment>/results.{jsonl,csv}     copy of the parent run's results.*
    research_runs/ablations/<experiment>/results.{jsonl,csv}   the same for an ablation
    checkpoints/<run-name>.last.pt, .best.pt                    copies of the run's checkpoints/*.pt
    checkpoints/<run-name>.tokenizer.json                       copy of the run's Artifact.TOKENIZER

Asked means `--local-copies` (`tracking.local_copies`; the original profile turns it on). They go
under one folder, `outdir.local_root` (where charts, exports and pipeline reports go too): `$MLPROJECT_LOCAL_DIR` when set, else the working directory in the
original profile (where the original suite put them, so its commands run as written), else
`./mlproject-outputs`. The MLflow run stays the source of truth: a copy is rewritten by the next
run of the same name, never read back by the suite itself except where a user passes its path.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mlproject.errors import MlprojectError
from mlproject.io import atomic_path, temp_path
from mlproject.outdir import check_writable, local_field, local_root, name_max, path_component

RESULTS_ROOT = Path("research_runs")
CHECKPOINTS_ROOT = Path("checkpoints")
SWEEP_FOLDERS = {"compare": "compare", "ablation": "ablations", "ladder": "ladders"}  # the original's folder names


def results_dir(kind: str, experiment_name: str, profile: str) -> Path:
    """`research_runs/compare/<experiment>`, `research_runs/ablations/<experiment>` or `research_runs/ladders/...`."""
    return local_root(profile) / RESULTS_ROOT / SWEEP_FOLDERS[kind] / path_component(experiment_name)


def check_results_dir(kind: str, experiment_name: str, profile: str) -> None:
    """Raise a one-line error now if a sweep's results copy could not be written: checked before
    the parent run exists, not found when the children have trained."""
    check_writable(results_dir(kind, experiment_name, profile), local_field())


def _copy_atomic(src: Path, dst: Path) -> Path:
    """`dst` becomes a copy of `src`, its own bytes: never a link. A hard link to the cache's
    tokenizer made an edit of the copy an edit of the cache (reused by the next run), and
    renaming a link over another link to the same file is a no-op that left the temporary behind."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst


def check_local_copies(run_name: str | None, profile: str) -> None:
    """Raise a one-line error now if the local copies of a run named `run_name` (None: a name MLflow
    picks, short) could not be written: checked before training, so no run is created for it."""
    folder = local_root(profile) / CHECKPOINTS_ROOT
    check_writable(folder, local_field())
    if run_name is None:
        return
    # The longest name written is the tokenizer copy's temporary, beside its final name.
    longest = temp_path(folder / f"{path_component(run_name)}.tokenizer.json").name
    limit = name_max(folder)
    if len(os.fsencode(longest)) > limit:
        room = limit - (len(os.fsencode(longest)) - len(os.fsencode(path_component(run_name))))
        raise MlprojectError(f"run_name={run_name[:40] + '...'!r} ({len(run_name)} characters) is too long for its "
                             f"local copies {CHECKPOINTS_ROOT}/<run name>.*: at most {room} bytes fit in a file "
                             "name; give a shorter --run-name")


def export_checkpoints(run_name: str, profile: str, *, last: Path | None, best: Path | None,
                       tokenizer: str | os.PathLike[str] | None) -> dict[str, Path]:
    """Copy a finished run's checkpoints and tokenizer to `checkpoints/<run-name>.*` under the local
    root; print the paths. The tokenizer copy is what `generate --tokenizer-path` takes with `--checkpoint`.
    """
    name, folder = path_component(run_name), local_root(profile) / CHECKPOINTS_ROOT
    written: dict[str, Path] = {}
    for kind, src in (("last", last), ("best", best)):
        if src is not None and Path(src).is_file():
            written[kind] = _copy_atomic(Path(src), folder / f"{name}.{kind}.pt")
    if tokenizer is not None and Path(tokenizer).is_file():
        written["tokenizer"] = _copy_atomic(Path(tokenizer), folder / f"{name}.tokenizer.json")
    if written:
        print("local copies: "
              + ", ".join(f"{k}={p}" for k, p in written.items()), flush=True)
        if "tokenizer" in written:
            print(f"tokenizer: {written['tokenizer']} (for generate --tokenizer-path)", flush=True)
    return written
