"""Peak-FLOPs lookup, the cached CPU probe, MFU and the step timer."""

from __future__ import annotations

import json
import time

import pytest
import torch

from mlproject.training import throughput
from mlproject.training.throughput import StepTimer, mfu, peak_flops, peak_memory_mb, table_peak_flops


@pytest.mark.parametrize(("name", "dtype", "expected"), [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.4e12),
    ("NVIDIA H100 PCIe", "bf16", 756e12),
    ("NVIDIA H200", "bf16", 989.4e12),
    ("NVIDIA H200 NVL", "bf16", 835.5e12),
    ("NVIDIA H200 NVL", "tf32", 417.5e12),
    ("NVIDIA A100-SXM4-80GB", "bf16", 312e12),
    ("NVIDIA A100-PCIE-40GB", "tf32", 156e12),
    ("NVIDIA L4", "bf16", 121e12),
    ("NVIDIA GeForce RTX 4090", "bf16", 165.2e12),
    ("Tesla V100-SXM2-16GB", "fp16", 125e12),
])
def test_peak_flops_table_by_device_name(name, dtype, expected):
    assert table_peak_flops(name, dtype) == expected


def test_unknown_gpu_or_dtype_has_no_table_entry():
    assert table_peak_flops("NVIDIA A10G", "bf16") is None  # not the A10's figure
    assert table_peak_flops("Tesla V100-SXM2-16GB", "bf16") is None
    assert table_peak_flops("Mystery Accelerator", "fp32") is None


def test_configured_peak_overrides_table_and_probe():
    assert peak_flops(torch.device("cpu"), None, override=1.5e12) == (1.5e12, "config")


def test_cuda_peak_comes_from_the_table(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    assert peak_flops(torch.device("cuda"), torch.bfloat16) == (989.4e12, "table")
    assert peak_flops(torch.device("cuda"), None) == (494.7e12, "table")  # fp32 work runs as TF32


def test_cpu_probe_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPROJECT_CACHE_DIR", str(tmp_path))
    calls = []
    monkeypatch.setattr(throughput, "probe_peak_flops", lambda *a, **k: calls.append(1) or 3e10)
    assert peak_flops(torch.device("cpu"), None) == (3e10, "probe")
    assert peak_flops(torch.device("cpu"), None) == (3e10, "probe")
    assert len(calls) == 1
    cache = json.loads((tmp_path / "peak_flops.json").read_text())
    (key,) = cache
    assert f"threads={torch.get_num_threads()}" in key and cache[key] == 3e10


def test_real_cpu_probe_measures_a_plausible_rate():
    rate = throughput.probe_peak_flops(torch.device("cpu"), n=256, repeats=2)
    assert 1e8 < rate < 1e14


def test_the_probe_leaves_the_global_rng_alone():
    """A run whose peak came from the probe and one whose peak came from the cache draw the
    same dropout masks."""
    torch.manual_seed(0)
    before = torch.get_rng_state()
    throughput.probe_peak_flops(torch.device("cpu"), n=256, repeats=1, budget_s=60.0)
    assert torch.equal(torch.get_rng_state(), before)


def test_probe_keeps_the_full_size_for_a_fast_kernel_and_shrinks_it_for_a_slow_one():
    cpu = torch.device("cpu")
    assert throughput._probe_size(cpu, torch.float32, 256, budget_s=60.0) == 256
    # with no time to spare, the size stays at the smallest step: the probe never takes minutes
    assert throughput._probe_size(cpu, torch.float32, 2048, budget_s=0.0) == 128
    assert throughput._probe_size(cpu, torch.float32, 64, budget_s=0.0) == 64


def test_bf16_probe_measures_a_rate_where_bf16_may_be_emulated():
    # bf16 on a CPU without bf16 instructions runs ~0.1 GFLOP/s: a 2048 probe would take minutes
    rate = throughput.probe_peak_flops(torch.device("cpu"), torch.bfloat16, n=2048, repeats=1, budget_s=0.5)
    assert 1e7 < rate < 1e14


def test_mfu_is_model_flops_over_peak():
    assert mfu(6e6, 1e4, 1e12) == pytest.approx(0.06)


def test_step_timer_reports_rates_and_data_share():
    timer = StepTimer(torch.device("cpu"))
    for _ in range(2):
        with timer.data():
            time.sleep(0.02)
        time.sleep(0.02)
        timer.step(1000)
    with timer.paused():
        time.sleep(0.2)  # evaluation: not training time
    m = timer.window()
    assert m["ms_per_step"] == pytest.approx(40, rel=0.5)
    assert m["tokens_per_sec"] == pytest.approx(2000 / 0.08, rel=0.5)
    assert m["data_time_share"] == pytest.approx(0.5, abs=0.2)
    assert timer.mean_tokens_per_sec == pytest.approx(m["tokens_per_sec"])


def test_peak_memory_is_reported_in_megabytes():
    assert 10 < peak_memory_mb(torch.device("cpu")) < 1e6
