"""Command latency: the fixed seconds a researcher waits for small commands, as a user runs them.

    python -m benchmarks.command_latency             # 3 rounds, medians (about 2 minutes on 2 cores)
    python -m benchmarks.command_latency --rounds 1  # one round
    python -m benchmarks.command_latency --json      # the same figures as JSON

Every figure is a fresh `mlproject` process started as a shell would start it, in a temporary
folder with its own SQLite tracking store and a warm token cache (a first, untimed train builds
the tokenizer and the caches and leaves a checkpoint). Timed, round by round:

- `python -c "import mlproject.cli"` and `mlproject --help`: the floor every command pays;
- `mlproject generate --checkpoint FILE --tokenizer-path FILE` of 20 new tokens (target <= 4 s);
- a 30-step nano train (block 64, batch 4, evaluation at the end): wall time against the
  trainer's own `elapsed_sec`, the training itself (target: wall <= 1.5 x training + 5 s);
- `mlproject summary --dataset pydocs`: seconds to its first preset line and in all;
- the same generation through `mlflow models serve` of the run's logged pyfunc model: one
  POST to `/invocations` (one prompt, 20 new tokens, greedy), against the server already up
  (its start-up is timed once, before the rounds).

Figures are medians over rounds. A busy machine inflates all of them: the header prints the
load average at the start and the end. The exit status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MLPROJECT = [sys.executable, "-m", "mlproject"]
TRAIN = ["train", "--preset", "nano", "--dataset", "pydocs", "--vocab-size", "2048", "--block-size", "64",
         "--batch-size", "4", "--max-steps", "30", "--eval-interval", "30", "--experiment-name", "latency"]


@dataclass
class Timing:
    """One command's wall seconds, and when its first line of interest appeared."""

    wall: float
    first_line: float | None
    output: str


def timed(cmd: list[str], env: dict[str, str], cwd: Path, first: str | None = None) -> Timing:
    """Run `cmd`, timing it from before the process starts until it exits (and until the first
    stdout line matching the regex `first`)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines, first_at = [], None
    for line in proc.stdout:
        lines.append(line)
        if first and first_at is None and re.search(first, line):
            first_at = time.perf_counter() - start
    code = proc.wait()
    wall = time.perf_counter() - start
    output = "".join(lines)
    if code != 0:
        raise SystemExit(f"command_latency: {' '.join(cmd[2:])} exited {code}:\n{output[-2000:]}")
    return Timing(wall, first_at, output)


def elapsed_sec(output: str) -> float:
    """The trainer's own training seconds, from the run's summary line."""
    match = re.search(r"elapsed_sec=([\d.]+)", output)
    if match is None:
        raise SystemExit(f"command_latency: no elapsed_sec in the train output:\n{output[-2000:]}")
    return float(match.group(1))


MODEL_NAME = "latency-gpt"
INVOCATION = {"inputs": ["def"], "params": {"max_new_tokens": 20, "temperature": 0.0}}


@contextlib.contextmanager
def served_model(env: dict[str, str], work: Path) -> Iterator[tuple[str, float]]:
    """`mlflow models serve` of the registered model on a free 127.0.0.1 port: (URL, start-up seconds)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bin_dir = Path(sys.executable).parent  # the serve command starts uvicorn from PATH
    env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"}
    log = work / "serve.log"
    start = time.perf_counter()
    proc = subprocess.Popen([str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{MODEL_NAME}/1",
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "--workers", "1"],
                            env=env, cwd=work, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            if proc.poll() is not None or time.perf_counter() - start > 300:
                raise SystemExit(f"command_latency: mlflow models serve did not come up:\n{log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", time.perf_counter() - start
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)


def invocation_sec(url: str) -> float:
    """Wall seconds of one /invocations request, from sending it to its answer read."""
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps(INVOCATION).encode(),
                                     headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        answer = json.loads(response.read())
    elapsed = time.perf_counter() - start
    if len(answer.get("predictions", [])) != 1:
        raise SystemExit(f"command_latency: /invocations answered {answer!r}, expected one prediction")
    return elapsed


def one_round(env: dict[str, str], work: Path, checkpoint: Path, tokenizer: Path, url: str) -> dict[str, float]:
    """Every command once, in a fixed order (each is a fresh process)."""
    out: dict[str, float] = {}
    out["import_sec"] = timed([sys.executable, "-c", "import mlproject.cli"], env, work).wall
    out["help_sec"] = timed([*MLPROJECT, "--help"], env, work).wall
    out["generate_sec"] = timed([*MLPROJECT, "generate", "--checkpoint", str(checkpoint), "--tokenizer-path",
                                 str(tokenizer), "--max-new-tokens", "20", "--prompts", "def"], env, work).wall
    out["invocations_sec"] = invocation_sec(url)
    train = timed([*MLPROJECT, *TRAIN, "--run-name", "timed"], env, work, first=r"^training ")
    out["train_wall_sec"], out["train_sec"] = train.wall, elapsed_sec(train.output)
    out["train_to_first_step_sec"] = train.first_line or float("nan")
    summary = timed([*MLPROJECT, "summary", "--dataset", "pydocs"], env, work, first=r"^gpt[23] ")
    out["summary_sec"], out["summary_first_line_sec"] = summary.wall, summary.first_line or float("nan")
    return out


def measure(rounds: int) -> dict[str, float]:
    """Medians over `rounds` after one untimed warm-up train (which leaves the checkpoint)."""
    with tempfile.TemporaryDirectory(prefix="mlproject-latency-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "HF_HUB_OFFLINE": "1"}
        env.setdefault("MLPROJECT_CACHE_DIR", str(work / "cache"))
        env.pop("MLFLOW_RUN_ID", None)
        # the warm-up run leaves local copies (asked for: a run keeps none by default) for generate
        # and logs the pyfunc model that `mlflow models serve` answers from
        warm = timed([*MLPROJECT, *TRAIN, "--run-name", "warm", "--local-copies", "--log-model",
                      "--register-as", MODEL_NAME], env, work)
        checkpoint = Path(re.search(r"best=(\S+?\.pt)", warm.output).group(1))
        tokenizer = Path(re.search(r"tokenizer: (\S+) \(for generate", warm.output).group(1))
        with served_model(env, work) as (url, serve_start_sec):
            invocation_sec(url)  # the first request loads nothing more, but warms the server's paths
            results = [one_round(env, work, work / checkpoint, work / tokenizer, url) for _ in range(rounds)]
    return {**{key: statistics.median(r[key] for r in results) for key in results[0]},
            "serve_start_sec": serve_start_sec}


def verdicts(m: dict[str, float]) -> list[tuple[str, str, bool | None]]:
    """(figure, value, met) lines; met is None for figures without a target."""
    train_target = 1.5 * m["train_sec"] + 5
    return [
        ("import mlproject.cli", f"{m['import_sec']:.2f} s", None),
        ("mlproject --help", f"{m['help_sec']:.2f} s", None),
        ("generate --checkpoint, 20 tokens (target <= 4 s)", f"{m['generate_sec']:.2f} s", m["generate_sec"] <= 4),
        ("mlflow models serve: POST /invocations, 1 prompt, 20 tokens", f"{m['invocations_sec']:.2f} s", None),
        ("mlflow models serve: start until /ping answers (once)", f"{m['serve_start_sec']:.2f} s", None),
        (f"30-step nano train: wall (target <= 1.5 x {m['train_sec']:.2f} s training + 5 s = {train_target:.1f} s)",
         f"{m['train_wall_sec']:.2f} s", m["train_wall_sec"] <= train_target),
        ("30-step nano train: start to the `training` line", f"{m['train_to_first_step_sec']:.2f} s", None),
        ("summary --dataset pydocs: first preset line", f"{m['summary_first_line_sec']:.2f} s", None),
        ("summary --dataset pydocs: all presets", f"{m['summary_sec']:.2f} s", None),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.command_latency", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (medians are reported)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}")
    load_start, t0 = os.getloadavg()[0], time.perf_counter()
    m = measure(args.rounds)
    lines = verdicts(m)
    if args.json:
        print(json.dumps({"figures": m, "rounds": args.rounds, "load_avg_1m": [load_start, os.getloadavg()[0]],
                          "met": {name: met for name, _, met in lines if met is not None}}, indent=1))
    else:
        print(f"{time.strftime('%Y-%m-%d %H:%M %Z')}: {os.cpu_count()} cores, {args.rounds} round(s), "
              f"load {load_start:.2f} -> {os.getloadavg()[0]:.2f}; {time.perf_counter() - t0:.0f} s")
        width = max(len(name) for name, _, _ in lines)
        for name, value, met in lines:
            print(f"{name:<{width}}  {value:>8}  {'' if met is None else ('pass' if met else 'FAIL')}")
    return 0 if all(met is not False for _, _, met in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
