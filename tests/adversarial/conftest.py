"""The world the adversarial cases run in, built once for the folder:

- a user's folder (`user`) of files the suite must never change: a tiny corpus, train and sweep
  YAMLs, copies of a trained checkpoint and its tokenizer, a regular file, folders with other
  files in them (one with a `config.json`), a pickle that would run code when unpickled;
- states in the session's SQLite store: one FINISHED run with a logged model, one RUNNING run
  leased by another live process, and a planned sweep (its parent RUNNING, its children
  SCHEDULED);
- per case: the session store and token cache, a token in the environment, offline, a fresh
  working directory (the suite's own outputs go there).
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import yaml

from adversary import TOKEN, call_main
from helpers import REPO, tiny, unique, use_store

WORDS = ("def return class import self value list dict for while if else try except print data model "
         "train loss step batch token layer head").split()
VOCAB = 1024  # the model's vocabulary; the small tokenizer below has far fewer entries


class Payload:
    """A pickle that would create a file in the user's folder when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _user_folder(root: Path) -> dict[str, str]:
    """The user's files; their places by name."""
    root.mkdir()
    rng = random.Random(0)
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join(rng.choice(WORDS) for _ in range(60)) for _ in range(300)) + "\n")
    (root / "important.txt").write_text("the user's notes\n")
    (root / "afile").write_text("a regular file where a folder is expected\n")
    (root / "empty.txt").write_bytes(b"")
    (root / "binary.bin").write_bytes(bytes(range(256)) * 16)
    for name, files in {"hf_config": ("config.json", "important.txt", "subdir/keep.txt"),
                        "hf_plain": ("important.txt", "subdir/keep.txt")}.items():
        for rel in files:
            (root / name / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / name / rel).write_text("{}\n" if rel.endswith(".json") else "keep me\n")
    (root / "bad.yaml").write_text("train: [unclosed\n  : :\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "evil.yaml").write_text(f"train: !!python/object/apply:os.system ['touch {root}/PWNED']\n")
    (root / "evil.pt").write_bytes(pickle.dumps(Payload(root / "PWNED")))
    (root / "garbage.json").write_text("{not json")
    (root / "empty_dir").mkdir()
    return {"user": str(root), "corpus": str(corpus), "text": str(root / "important.txt"),
            "file": str(root / "afile"), "empty": str(root / "empty.txt"), "binary": str(root / "binary.bin"),
            "hf_config": str(root / "hf_config"), "hf_plain": str(root / "hf_plain"),
            "bad_yaml": str(root / "bad.yaml"), "list_yaml": str(root / "list.yaml"),
            "evil_yaml": str(root / "evil.yaml"), "evil": str(root / "evil.pt"),
            "garbage": str(root / "garbage.json"), "empty_dir": str(root / "empty_dir"),
            "missing": str(root / "missing.pt"), "long": "n" * 300}


def _write_yaml(path: Path, experiment: str, corpus: str, outputs: Path, **sections: dict) -> str:
    data = tiny(data={"dataset": "local_jsonl", "local_path": corpus, "local_format": "text",
                      "vocab_size": VOCAB}, tracking={"experiment_name": experiment, "output_dir": str(outputs)},
                **sections)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def _train(places: dict[str, str], workdir: Path, experiment: str) -> str:
    """One tiny run with a logged model; its id. Its checkpoint and tokenizer are copied into
    the user's folder (the user's own files from then on)."""
    from mlflow import MlflowClient

    workdir.mkdir()
    os.chdir(workdir)
    assert call_main(["train", "--config", places["yaml"], "--log-model", "true", "--local-copies"]) == 0
    experiment_id = MlflowClient().get_experiment_by_name(experiment).experiment_id
    run_id = MlflowClient().search_runs([experiment_id])[0].info.run_id
    model = Path(places["user"]) / "model"
    model.mkdir()
    shutil.copy(next(workdir.parent.glob(f"outputs/{run_id}/checkpoints/last.pt")), model / "last.pt")
    shutil.copy(next(workdir.glob("mlproject-outputs/checkpoints/*.tokenizer.json")), model / "tokenizer.json")
    return run_id


def _held_run(experiment: str, checkpoint: Path) -> str:
    """A RUNNING run whose lease another live process holds (a fresh heartbeat, a long timeout)."""
    from mlflow import MlflowClient

    from mlproject.schema import Tag
    from mlproject.tracking.lease import Holder

    client = MlflowClient()
    run = client.create_run(client.get_experiment_by_name(experiment).experiment_id, run_name="held")
    client.log_artifact(run.info.run_id, str(checkpoint), "checkpoints")
    holder = Holder("another-host", 4242, 1.0, timeout=1e9)
    client.set_tag(run.info.run_id, Tag.LEASE_HOLDER, holder.to_tag())
    client.set_tag(run.info.run_id, Tag.LEASE_HEARTBEAT, str(time.time()))
    return run.info.run_id


def _planned_sweep(places: dict[str, str], experiment: str) -> tuple[str, str]:
    """`compare --plan-only`: (the parent's id, one SCHEDULED child's id)."""
    from mlflow import MlflowClient

    from mlproject.schema import Tag

    assert call_main(["compare", "--config", places["sweep_yaml"], "--plan-only", "--seeds", "1", "2"]) == 0
    client = MlflowClient()
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], "attributes.status = 'RUNNING'")
    parents = [r for r in runs if Tag.PARENT not in r.data.tags and r.info.run_name != "held"]
    children = client.search_runs([experiment_id], f"tags.`{Tag.PARENT}` = '{parents[0].info.run_id}'")
    return parents[0].info.run_id, children[0].info.run_id


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory, store_uri: str, cache_dir: Path) -> dict[str, str]:
    """The places every case may name (formatted into its argv): user files, run ids, YAMLs."""
    from mlproject.data.tokenizer import save_tokenizer, train_tokenizer

    root = tmp_path_factory.mktemp("adversarial")
    experiment = unique("adversarial")
    places = _user_folder(root / "user")
    user = Path(places["user"])
    places["yaml"] = _write_yaml(user / "train.yaml", experiment, places["corpus"], root / "outputs")
    places["sweep_yaml"] = _write_yaml(user / "sweep.yaml", experiment, places["corpus"], root / "outputs",
                                       train={"max_steps": 4})
    places["small_tok"] = str(save_tokenizer(train_tokenizer(["def f(x): return x\n"] * 20, 300),
                                             user / "small_tokenizer.json"))
    cwd = os.getcwd()
    with pytest.MonkeyPatch.context() as mp:
        use_store(mp, store_uri, cache_dir)
        try:
            places["run_id"] = _train(places, root / "trained", experiment)
            places["ckpt"], places["tok"] = str(user / "model" / "last.pt"), str(user / "model" / "tokenizer.json")
            places["held"] = _held_run(experiment, user / "model" / "last.pt")
            places["parent"], places["child"] = _planned_sweep(places, experiment)
        finally:
            os.chdir(cwd)
            mlflow.set_tracking_uri(None)
    places["experiment"] = experiment
    return places


def _git_status() -> str | None:
    """The checkout's changed and untracked files (None without git): a case that writes into the
    repository (an `mlruns/` of a store opened there, a stray output) shows up here."""
    try:
        done = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=all"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


@pytest.fixture(scope="package", autouse=True)
def checkout_untouched() -> Iterator[None]:
    before = _git_status()
    yield
    assert _git_status() == before, "the adversarial cases changed files of the checkout"


@pytest.fixture(autouse=True)
def adversarial_env(store_uri: str, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every case: the session store and cache, offline, a token in the environment, no retries
    against a server that is not there, its own working directory."""
    use_store(monkeypatch, store_uri, cache_dir, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    # main sets this for a URI with credentials; set here first so it is undone after each case
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "false")
    monkeypatch.delenv("MLPROJECT_DEBUG", raising=False)
    monkeypatch.delenv("MLPROJECT_LOCAL_DIR", raising=False)
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
