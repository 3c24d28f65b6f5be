"""The GPU check: training MFU, generation against HF, a short compare, and the SDPA backend.

    python -m benchmarks.gpu_check --out gpu_check.json            # on a CUDA machine (minutes)
    python -m benchmarks.gpu_check --dry-run --out dry.json         # tiny sizes on the CPU (seconds)

`benchmarks/gpu_check.sh` installs what is missing and runs this under a time limit. Figures:

1. train: gpt2-124m at block 1024 through the trainer (`training.trainer.train`) in bf16
   autocast with `torch.compile`, on a random-token cache; tokens/s and MFU (the trainer's own
   metric: 6N + 12LHQT FLOPs per token over the device's dense bf16 peak from
   `training.throughput.PEAK_FLOPS`) are medians of the log windows after compilation.
2. generate: new tokens/s of ours against HF `generate`, same weights, greedy, batch 1 and 8.
3. compare: `mlproject compare` of gpt2 and gpt3, 2 seeds, on the device, into a SQLite store;
   every child must finish.
4. sdpa: the attention kernel a bf16 forward really runs, read from the profiler (the flash
   kernel's op name), and a forward with only the flash backend allowed (raises otherwise).
   The dry run profiles an fp32 forward: on a CPU a bf16 forward takes explicit matmuls.

--dry-run runs the same code at tiny sizes on the CPU, so a test keeps it working where no
GPU is; its figures mean nothing. One JSON file of figures comes out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]


def _device(dry_run: bool) -> torch.device:
    if dry_run:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device is visible (use --dry-run to exercise the script on a CPU)")
    return torch.device("cuda")


def check_train(device: torch.device, dry_run: bool) -> dict[str, Any]:
    from benchmarks.trainer_loop import _token_cache
    from mlproject.model.config import GPTConfig
    from mlproject.training.config import RuntimeConfig, TrainConfig
    from mlproject.training.resolve import resolve
    from mlproject.training.trainer import TrainerCallback, train

    class Windows(TrainerCallback):
        def __init__(self) -> None:
            self.rows: list[dict[str, float]] = []
            self.start: dict[str, Any] = {}

        def on_train_start(self, info: dict) -> None:
            self.start = info

        def on_log(self, step: int, metrics: dict[str, float]) -> None:
            self.rows.append(metrics)

    if dry_run:
        model = GPTConfig(preset=None, n_layer=2, n_head=2, d_model=64, block_size=64, dropout=0.0)
        batch, steps, log, vocab = 2, 6, 2, 512
    else:  # GPT-2 small at its own context; 16 x 1024 tokens fill an H100's tensor cores
        model = GPTConfig(preset="gpt2-124m", block_size=1024, dropout=0.0)
        batch, steps, log, vocab = 16, 120, 10, 50304
    windows = Windows()
    with tempfile.TemporaryDirectory() as tmp:
        cache = _token_cache(Path(tmp) / "train.bin", vocab, batch * (model.block_size + 1) * (steps + 2), seed=0)
        data = type("Data", (), {"train": cache, "val": cache, "vocab_size": vocab, "eot_id": 0, "pad_id": 0})()
        cfg = TrainConfig(batch_size=batch, max_steps=steps, epochs=1000, precision="bf16", eval_interval=10**9,
                          eval_batches=1, log_interval=log, save_every=0)
        runtime = RuntimeConfig(device=str(device), compile=not dry_run, progress="lines")
        model, cfg = resolve(model, cfg, vocab)
        t0 = time.perf_counter()
        train(model, data, cfg, runtime=runtime, checkpoint_dir=Path(tmp) / "ckpt", callbacks=[windows])
        seconds = time.perf_counter() - t0
    timed = windows.rows[2:] or windows.rows[-1:]  # the first windows include compilation
    return {"model": "gpt2-124m" if not dry_run else "tiny", "block_size": model.block_size, "batch_size": batch,
            "precision": windows.start.get("precision"), "compile": runtime.compile, "steps": steps,
            "peak_flops": windows.start.get("peak_flops"), "peak_flops_source": windows.start.get("peak_flops_source"),
            "tokens_per_sec": statistics.median(r["tokens_per_sec"] for r in timed),
            "mfu": statistics.median(r["mfu"] for r in timed),
            "peak_mem_mb": max(r["peak_mem_mb"] for r in windows.rows), "seconds": round(seconds, 1),
            "target_mfu_h100_sxm": 0.45}


def check_generate(device: torch.device, dry_run: bool) -> dict[str, Any]:
    from benchmarks.harness import interleaved, seconds_per_call
    from benchmarks.models import Size, hf_gpt2
    from mlproject.inference.generate import generate
    from mlproject.model.hf import from_hf

    size = Size("tiny", 2, 2, 64, vocab_size=512) if dry_run else Size.preset("gpt2-124m", vocab_size=50257)
    prompt_len, new = (8, 8) if dry_run else (128, 256)
    torch.manual_seed(0)
    hf = hf_gpt2(size, block_size=prompt_len + new).eval().to(device)
    ours = from_hf(hf).eval().to(device)
    out: dict[str, Any] = {"prompt": prompt_len, "new_tokens": new, "greedy": True}
    for batch in (1, 8):
        prompt = torch.randint(0, size.vocab_size, (batch, prompt_len), generator=torch.Generator().manual_seed(batch))
        prompts, prompt, mask = prompt.tolist(), prompt.to(device), torch.ones_like(prompt).to(device)

        def run_ours() -> None:
            generate(ours, prompts, new, temperature=0.0)
            if device.type == "cuda":
                torch.cuda.synchronize()

        def run_hf() -> None:
            with torch.no_grad():
                hf.generate(prompt, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                            pad_token_id=0)
            if device.type == "cuda":
                torch.cuda.synchronize()

        run_ours(), run_hf()  # warm-up
        res = interleaved({"ours": lambda: seconds_per_call(run_ours, 1), "hf": lambda: seconds_per_call(run_hf, 1)},
                          2 if dry_run else 5)
        ours_rate, hf_rate = (batch * new / statistics.median(res[k]) for k in ("ours", "hf"))
        out[f"b{batch}"] = {"ours_tokens_per_sec": ours_rate, "hf_tokens_per_sec": hf_rate, "ratio": ours_rate / hf_rate}
    return out


def check_compare(device: torch.device, dry_run: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        if dry_run:  # a small local corpus: no offline-corpus build, a tokenizer in a second
            corpus = Path(tmp) / "corpus.jsonl"
            corpus.write_text("".join(json.dumps({"text": f"def f{i}(x):\n    return x * {i} + {i % 7}\n" * 20}) + "\n"
                                      for i in range(300)))
            size = ["--dataset", "local_jsonl", "--local-path", str(corpus), "--n-layer", "2", "--n-head", "2",
                    "--d-model", "64", "--block-size", "64", "--vocab-size", "300", "--batch-size", "4",
                    "--max-steps", "4", "--num-threads", "1"]
        else:
            size = ["--dataset", "pydocs", "--preset", "small", "--block-size", "512", "--batch-size", "16",
                    "--max-steps", "150"]
        cmd = [sys.executable, "-m", "mlproject", "compare", "--models", "gpt2", "gpt3",
               "--seeds", "1", "2", "--device", str(device), "--eval-interval", "50", "--eval-batches", "4",
               "--save-every", "0", "--progress", "lines", "--experiment-name", "gpu-check", *size]
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "HF_HUB_OFFLINE": "1"}
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        result: dict[str, Any] = {"returncode": done.returncode, "seconds": round(seconds, 1)}
        if done.returncode != 0:
            result["stderr_tail"] = done.stderr[-2000:]
            return result
        import mlflow  # benchmarks are not the package: reading the store here is fine

        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        runs = mlflow.search_runs(experiment_names=["gpu-check"], output_format="list")
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        result["children"] = len(children)
        result["children_finished"] = sum(r.info.status == "FINISHED" for r in children)
        result["val_loss_best"] = sorted(r.data.metrics.get("val_loss_best", float("nan")) for r in children)
        return result


def check_sdpa(device: torch.device, dry_run: bool) -> dict[str, Any]:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import profile

    from mlproject.model.config import GPTConfig
    from mlproject.model.gpt import GPT

    cfg = (GPTConfig(preset=None, n_layer=1, n_head=2, d_model=64, block_size=64, vocab_size=512, dropout=0.0)
           if dry_run else GPTConfig(preset="gpt2-124m", n_layer=1, block_size=1024, vocab_size=50304, dropout=0.0))
    model = GPT(cfg.resolved()).to(device).eval()
    idx = torch.randint(0, 512, (2, cfg.block_size), device=device)
    # A bf16 forward on a CPU takes explicit matmuls, not SDPA (model/gpt.py, CausalSelfAttention),
    # so the dry run profiles the fp32 forward, which runs the CPU flash kernel.
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=not dry_run):
        with profile() as prof:
            model(idx)
        ops = sorted({e.key for e in prof.key_averages() if "scaled_dot_product" in e.key})
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # raises "No available kernel" if flash cannot run
            model(idx)
    flash = any("flash" in op for op in ops)
    if not flash:
        raise AssertionError(f"the model's attention did not run the flash kernel: {ops}")
    return {"ops": ops, "flash": flash, "flash_only_forward": "ok"}


CHECKS = {"train": check_train, "generate": check_generate, "compare": check_compare, "sdpa": check_sdpa}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: checks that the script runs")
    p.add_argument("--out", default="gpu_check.json", help="the JSON file of figures")
    p.add_argument("--only", choices=list(CHECKS), action="append", help="run only this check (repeatable)")
    args = p.parse_args(argv)
    device = _device(args.dry_run)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)"
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "device": name, "dry_run": args.dry_run,
                              "torch": torch.__version__, "cuda": torch.version.cuda, "checks": {}}
    failed = []
    for key in args.only or list(CHECKS):
        print(f"gpu_check: {key}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            report["checks"][key] = CHECKS[key](device, args.dry_run)
        except Exception as exc:  # one failed check must not lose the others' figures
            report["checks"][key] = {"error": f"{type(exc).__name__}: {exc}"}
            failed.append(key)
        report["checks"][key]["check_seconds"] = round(time.perf_counter() - t0, 1)
        Path(args.out).write_text(json.dumps(report, indent=1, default=str))  # after each: a kill keeps the rest
    print(json.dumps(report, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
