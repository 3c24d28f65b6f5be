"""Mapped Airflow tasks vs `--parallel 2`: the same 4-child compare, two ways, one table.

    MLPROJECT_IMAGE=mlproject-step:i14 python -m benchmarks.sweep_orchestration [--steps 120]

1. local: `mlproject compare --parallel 2` against a tracking server (children as processes);
2. mapped: the DAG under `airflow standalone` (LocalExecutor, parallelism 2): a plan task,
   4 mapped child containers, an aggregate task, against the same server.

Printed: both wall times and their ratio, and the orchestration overhead per child: the start
of a step container (`docker run IMAGE mlproject --help`, the median of 3), and the upload and
download of one child checkpoint through the server's proxied artifact store (median of 3).
Needs the Docker engine and the step image; run it on an idle machine (the figures on a shared
CPU are skewed by whatever else runs). No test asserts these numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).parent / "airflow")
DAG_ID = "gpt_research_pipeline"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compare_config(root: Path, experiment: str, steps: int) -> Path:
    path = root / f"{experiment}.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"preset": "nano", "block_size": 64},
        "data": {"dataset": "pydocs", "vocab_size": 512, "max_train_docs": 200, "max_val_docs": 20},
        "train": {"batch_size": 8, "max_steps": steps, "eval_interval": max(1, steps // 4), "eval_batches": 2,
                  "log_interval": 10, "save_every": max(1, steps // 4)},
        "runtime": {"device": "cpu", "progress": "lines"},
        "tracking": {"experiment_name": experiment, "log_model": False},
        "compare": {"models": ["gpt2", "gpt3"], "seeds": [42, 43]},
    }))
    return path


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlproject", "server", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
                             "--artifacts-destination", str(root / "mlartifacts"), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(180):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("the tracking server did not start")


def local_parallel(config: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mlproject", "compare", "--config", str(config), "--parallel", "2"],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"the local compare failed:\n{(done.stdout + done.stderr)[-4000:]}")
    return wall


def mapped_dag(root: Path, config: Path, env: dict[str, str], image: str) -> float:
    pipeline = root / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({"pipeline": {"name": "bench"}, "steps": [
        {"id": "compare", "entry_point": "compare", "parameters": {"config": str(config)}}]}))
    cache = root / "cache-containers"  # not the local run's: its files belong to this user
    cache.mkdir(exist_ok=True)
    cache.chmod(0o777)
    home = root / "airflow-home"
    home.mkdir()
    port = free_port()
    env = {**env, "PATH": f"{Path(AIRFLOW).parent}{os.pathsep}{env.get('PATH', '')}",  # standalone runs `airflow`
           "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "airflow" / "dags"), "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
           "AIRFLOW__CORE__PARALLELISM": "2", "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True", "AIRFLOW__API__HOST": "127.0.0.1",
           "AIRFLOW__API__PORT": str(port),
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
           "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5", "MLPROJECT_PIPELINE_CONFIG": str(pipeline),
           "MLPROJECT_IMAGE": image, "MLPROJECT_DOCKER_NETWORK": "host", "MLPROJECT_CACHE_VOLUME": str(cache),
           "MLPROJECT_CONFIG_MOUNT": str(root), "MLPROJECT_SWEEP_TASKS": "mapped"}
    airflow = subprocess.Popen([AIRFLOW, "standalone"], env=env, stdout=open(root / "standalone.log", "w"),
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while DAG_ID not in subprocess.run([AIRFLOW, "dags", "list", "-o", "json"], env=env,
                                           capture_output=True, text=True).stdout:
            time.sleep(3)
        t0 = time.perf_counter()
        subprocess.run([AIRFLOW, "dags", "trigger", DAG_ID, "--run-id", "bench"], env=env, check=True,
                       capture_output=True)
        deadline, state = time.monotonic() + 1200, None
        while time.monotonic() < deadline:
            out = subprocess.run([AIRFLOW, "dags", "list-runs", DAG_ID, "-o", "json"], env=env,
                                 capture_output=True, text=True).stdout
            lines = [line for line in out.splitlines() if line.startswith("[")]  # warnings print first
            runs = json.loads(lines[-1]) if lines else []
            state = next((r["state"] for r in runs if r["run_id"] == "bench"), None)
            if state in ("success", "failed"):
                break
            time.sleep(1)
        wall = time.perf_counter() - t0
    finally:
        os.killpg(airflow.pid, 15)
        airflow.wait(timeout=60)
    if state != "success":
        raise RuntimeError(f"the DAG run ended {state}; see {root / 'standalone.log'}")
    return wall


def container_start(image: str) -> float:
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run(["docker", "run", "--rm", "--network", "host", image, "mlproject", "--help"],
                       check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def checkpoint_transfer(url: str, experiment: str, root: Path) -> tuple[float, float, int]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url)
    run = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                             "tags.`mlflow.parentRunId` != ''")[0]
    ckpt = Path(client.download_artifacts(run.info.run_id, "checkpoints/last.pt", str(root / "ckpt")))
    scratch = client.create_run(client.get_experiment_by_name(experiment).experiment_id).info.run_id
    up, down = [], []
    for i in range(3):
        t0 = time.perf_counter()
        client.log_artifact(scratch, str(ckpt), f"bench{i}")
        up.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        client.download_artifacts(scratch, f"bench{i}/last.pt", str(root / f"down{i}"))
        down.append(time.perf_counter() - t0)
    return statistics.median(up), statistics.median(down), ckpt.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=120, help="training steps per child")
    parser.add_argument("--image", default=os.environ.get("MLPROJECT_IMAGE", "mlproject-step:latest"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlproject-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # mounted into the step containers, whose user is not this one
        server, url = start_server(root)
        env = {**os.environ, "MLFLOW_TRACKING_URI": url, "MLPROJECT_CACHE_DIR": str(root / "cache"),
               "HF_HUB_OFFLINE": "1"}
        env.pop("MLFLOW_RUN_ID", None)
        try:
            local = local_parallel(compare_config(root, "bench-local", args.steps), env)
            print(f"local --parallel 2: {local:.1f} s", flush=True)
            mapped = mapped_dag(root, compare_config(root, "bench-mapped", args.steps), env, args.image)
            start = container_start(args.image)
            up, down, size = checkpoint_transfer(url, "bench-local", root)
        finally:
            server.terminate()
            server.wait(timeout=30)
    load = os.getloadavg()[0]
    print(f"4-child compare (nano, {args.steps} steps), load average {load:.1f}:")
    print(f"  local --parallel 2          {local:7.1f} s")
    print(f"  Airflow mapped, 2 workers   {mapped:7.1f} s   ratio mapped/local {mapped / local:.2f}")
    print(f"  per child: container start {start:.2f} s, checkpoint ({size / 1e6:.1f} MB) upload {up:.3f} s, "
          f"download {down:.3f} s")


if __name__ == "__main__":
    main()
