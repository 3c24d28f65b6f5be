"""DDP on CPU: two gloo processes, each accumulating 2 micro-batches of 1 window, follow the
loss curve of one process with batch 4 on the same data (the sampler deals each global batch
out across the ranks; gradients are all-reduced only on the last micro-batch)."""

from __future__ import annotations

import pytest

from helpers import free_port

TRAIN = dict(max_steps=6, eval_interval=3, eval_batches=2, log_interval=1, save_every=3, warmup_steps=1,
             device="cpu", precision="fp32", num_threads=1, progress="lines", peak_flops=1e11, seed=7)


@pytest.mark.e2e
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(data, cache_dir, tmp_path, start_child,
                                                                        child_result):
    port = str(free_port())
    ranks = [start_child({"cache_dir": str(cache_dir), "checkpoint_dir": str(tmp_path / "ddp"),
                          "train": {**TRAIN, "batch_size": 1, "grad_accum_steps": 2, "eval_batches": 4}},
                         {"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                          "MASTER_PORT": port})
             for r in range(2)]
    single = start_child({"cache_dir": str(cache_dir), "checkpoint_dir": str(tmp_path / "single"),
                          "train": {**TRAIN, "batch_size": 4}})
    rank0, rank1 = (child_result(p) for p in ranks)
    one = child_result(single)

    assert len(rank0["losses"]) == 6
    for step, loss in one["losses"].items():
        assert rank0["losses"][step] == pytest.approx(loss, rel=1e-5)
    for step, loss in one["val"].items():
        assert rank0["val"][step] == pytest.approx(loss, rel=1e-5)
    assert rank0["summary"]["tokens_seen"] == one["summary"]["tokens_seen"]
    # every rank returns the all-reduced losses; only rank 0 calls back and writes checkpoints
    assert rank1["summary"]["train_loss_last"] == pytest.approx(rank0["summary"]["train_loss_last"], rel=1e-6)
    assert rank1["losses"] == {} and rank1["events"] == []
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["best.pt", "last.pt"]


@pytest.mark.e2e
def test_a_ddp_run_stopped_off_the_log_interval_resumes_onto_the_uninterrupted_curve(data, cache_dir, tmp_path,
                                                                                    start_child, child_result):
    """Each rank's logging window differs; last.pt keeps their mean, which every rank restores:
    the first mean logged after the resume (steps 1-4 over both ranks) is the uninterrupted one."""
    train = {**TRAIN, "batch_size": 1, "grad_accum_steps": 2, "eval_batches": 4, "max_steps": 8, "log_interval": 4,
             "eval_interval": 4, "save_every": 0}

    def ddp(folder: str, train_cfg: dict, resume: bool = False) -> dict:
        port = str(free_port())
        spec = {"cache_dir": str(cache_dir), "checkpoint_dir": str(tmp_path / folder), "train": train_cfg,
                "model": {"dropout": 0.1},
                "resume_from": str(tmp_path / folder / "last.pt") if resume else None}
        ranks = [start_child(spec, {"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
                                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}) for r in range(2)]
        return [child_result(p) for p in ranks][0]

    reference = ddp("ref", train)
    assert ddp("run", {**train, "stop_at_step": 3})["step"] == 3
    resumed = ddp("run", train, resume=True)
    assert sorted(resumed["losses"]) == sorted(reference["losses"]) == ["4", "8"]
    for step, loss in reference["losses"].items():
        assert resumed["losses"][step] == pytest.approx(loss, rel=1e-6, abs=1e-6), step
    for step, loss in reference["val"].items():
        assert resumed["val"][step] == pytest.approx(loss, rel=1e-6, abs=1e-6), step
