"""lm-evaluation-harness tasks on an exported model (the optional extra `eval`).

The model runs through lm-eval's own Hugging Face wrapper (`model="hf"`) on the folder that
`model.hf_export.export_hf` wrote, so the harness scores exactly what a transformers user
would load. Custom tasks are YAML files in `task_dir` (lm-eval's `include_path`); a task whose
dataset is `json` with local `data_files` needs no network. Every task metric is returned with
its standard error as `lm_eval/<task>/<metric>` and `lm_eval/<task>/<metric>_stderr`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mlproject.errors import MlprojectError, require_extra


def _lm_eval() -> Any:
    require_extra("accelerate", "eval", "evaluate --tasks")  # lm-eval's HF wrapper imports it to load a model
    lm_eval = require_extra("lm_eval", "eval", "evaluate --tasks")
    return lm_eval, require_extra("lm_eval.tasks", "eval", "evaluate --tasks").TaskManager


def require_harness() -> None:
    """One line naming the `eval` extra if lm-eval (or accelerate) is missing: checked before
    the evaluation's minutes of work, not after them."""
    _lm_eval()


def _missing_data(exc: BaseException) -> bool:
    """Whether `exc` (or its cause) says a dataset could not be fetched: offline mode, no
    connection, or nothing in the cache."""
    while exc is not None:
        text = f"{type(exc).__name__} {exc}".lower()
        if isinstance(exc, (ConnectionError, TimeoutError)) or any(
                word in text for word in ("offline", "connection", "couldn't reach", "not found on the hub",
                                          "doesn't exist on the hub", "datasetnotfound", "cache")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def flatten_results(results: dict[str, Any]) -> dict[str, float]:
    """lm-eval's `results` section ({task: {"acc,none": v, "acc_stderr,none": s}}) as flat metrics."""
    out: dict[str, float] = {}
    for task, values in results.items():
        for key, value in values.items():
            if "," not in key or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            metric, filt = key.split(",", 1)
            name = metric if filt == "none" else f"{metric}_{filt}"
            out[f"lm_eval/{task}/{name}"] = float(value)
    return out


def run_tasks(model_dir: str | os.PathLike[str], tasks: list[str], *, task_dir: str | None = None,
              num_fewshot: int | None = None, limit: int | None = None, batch_size: int = 8,
              device: str = "cpu", trust_remote_code: bool = False) -> dict[str, float]:
    """Run `tasks` on the HF folder `model_dir`; return the flat metrics (see the module docstring).

    `trust_remote_code`: the folder is a custom-code export (`export-hf --allow-custom-code`)."""
    lm_eval, TaskManager = _lm_eval()
    if task_dir is not None and not Path(task_dir).is_dir():
        raise MlprojectError(f"task_dir={task_dir!r} is not a folder; expected a folder of lm-eval task YAMLs")
    manager = TaskManager(include_path=str(task_dir) if task_dir else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise MlprojectError(f"lm-eval task {unknown[0]!r} is unknown; give a task name of lm-eval or a YAML "
                             "in --task-dir")
    model_dir = str(Path(model_dir).resolve())
    try:
        model_args = f"pretrained={model_dir},tokenizer={model_dir}" + (",trust_remote_code=True" * trust_remote_code)
        out = lm_eval.simple_evaluate(model="hf", model_args=model_args,
                                      tasks=list(tasks), num_fewshot=num_fewshot, limit=limit, batch_size=batch_size,
                                      device=device, task_manager=manager, log_samples=False)
    except MlprojectError:
        raise
    except Exception as exc:  # datasets raises several types for data it cannot reach
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        if _missing_data(exc):
            raise MlprojectError(f"lm-eval tasks {','.join(tasks)}: the task data is not in the local cache and "
                                 f"the Hugging Face Hub cannot be reached ({type(exc).__name__}: {first})") from None
        raise MlprojectError(f"lm-eval tasks {','.join(tasks)} failed: {type(exc).__name__}: {first}") from None
    metrics = flatten_results(out["results"])
    for name, value in sorted(metrics.items()):
        print(f"  {name:<40} {value:.4f}", flush=True)
    return metrics
