"""Process-group set-up from torchrun's environment (the 2-process run is in test_ddp.py)."""

from __future__ import annotations

import torch.distributed as dist

from mlproject.training.distributed import DistInfo, all_reduce_mean, any_process, init_distributed, rank_info


def test_without_torchrun_env_it_is_one_main_process():
    info = rank_info()
    assert info == DistInfo(rank=0, world_size=1, local_rank=0) and info.is_main and not info.enabled


def test_torchrun_env_is_read(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = rank_info()
    assert (info.rank, info.world_size, info.local_rank, info.is_main) == (3, 4, 1, False)


def test_single_process_creates_no_process_group():
    assert init_distributed(use_cuda=False) == (DistInfo(), False)
    assert not dist.is_initialized()


def test_single_process_reductions_are_identities():
    assert all_reduce_mean(2.5, DistInfo()) == 2.5
    assert any_process(True, DistInfo()) and not any_process(False, DistInfo())
