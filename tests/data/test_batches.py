"""WindowSampler, get_batch and BatchLoader: coverage, determinism, sharding and exact resumption."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlproject.data.batches import BatchLoader, WindowSampler, get_batch
from mlproject.errors import ConfigError, MlprojectError

BLOCK = 8


def _tokens(num_windows: int, block: int = BLOCK) -> np.ndarray:
    return np.arange(num_windows * block + 1, dtype=np.uint16)  # exactly num_windows windows


def _epoch(sampler: WindowSampler) -> list[list[int]]:
    return [starts.tolist() for starts in sampler]


def test_windows_and_targets_are_aligned_and_shifted_by_one():
    tokens = np.arange(100, dtype=np.uint16) * 3
    x, y = get_batch(tokens, torch.tensor([0, 16, 40]), BLOCK)
    assert x.shape == y.shape == (3, BLOCK) and x.dtype == y.dtype == torch.int64
    assert x.is_contiguous() and y.is_contiguous()
    assert x[1].tolist() == (np.arange(16, 24) * 3).tolist()
    assert torch.equal(y[:, :-1], x[:, 1:]) and y[2, -1].item() == 48 * 3


def test_window_count_uses_every_complete_window_of_block_plus_one_tokens():
    assert WindowSampler(81, BLOCK, 1, seed=0).num_windows == 10  # windows end at token 8*9+8 = 80
    assert WindowSampler(80, BLOCK, 1, seed=0).num_windows == 9


def test_every_window_is_visited_once_per_epoch():
    sampler = WindowSampler(len(_tokens(24)), BLOCK, batch_size=4, seed=1)
    for _ in range(2):
        starts = sorted(s for batch in _epoch(sampler) for s in batch)
        assert starts == [i * BLOCK for i in range(24)]


def test_remainder_windows_are_dropped_and_batches_are_full():
    sampler = WindowSampler(len(_tokens(27)), BLOCK, batch_size=4, seed=1)
    batches = _epoch(sampler)
    assert sampler.steps_per_epoch == len(batches) == 6
    assert all(len(b) == 4 for b in batches) and len({s for b in batches for s in b}) == 24


def test_same_seed_gives_the_same_batches_and_other_seeds_differ():
    n = len(_tokens(64))
    a, b, c = (WindowSampler(n, BLOCK, 4, seed=s) for s in (7, 7, 8))
    first_a, first_b, first_c = _epoch(a), _epoch(b), _epoch(c)
    assert first_a == first_b and first_a != first_c
    assert _epoch(a) != first_a  # each epoch has its own order


def test_batch_order_does_not_depend_on_the_global_torch_rng():
    n = len(_tokens(64))
    torch.manual_seed(0)
    first = _epoch(WindowSampler(n, BLOCK, 4, seed=3))
    torch.manual_seed(12345)
    torch.rand(10)
    assert _epoch(WindowSampler(n, BLOCK, 4, seed=3)) == first


def test_rank_shards_are_disjoint_equal_and_complete():
    n = len(_tokens(24))
    shards = [{s for b in _epoch(WindowSampler(n, BLOCK, 4, seed=5, rank=r, world_size=3)) for s in b}
              for r in range(3)]
    assert [len(s) for s in shards] == [8, 8, 8]
    assert set.union(*shards) == {i * BLOCK for i in range(24)}


def test_rank_shards_drop_the_same_remainder_on_every_rank():
    n = len(_tokens(26))
    samplers = [WindowSampler(n, BLOCK, 2, seed=5, rank=r, world_size=4) for r in range(4)]
    assert {s.steps_per_epoch for s in samplers} == {3}
    shards = [[x for b in _epoch(s) for x in b] for s in samplers]
    flat = [x for shard in shards for x in shard]
    assert len(flat) == len(set(flat)) == 24


def test_state_dict_resumes_with_exactly_the_next_batch_across_epochs():
    n = len(_tokens(20))
    reference = WindowSampler(n, BLOCK, 4, seed=9)
    expected = _epoch(reference) + _epoch(reference) + _epoch(reference)  # 3 epochs of 5 batches
    for stop in (3, 5, 7):
        sampler = WindowSampler(n, BLOCK, 4, seed=9)
        seen = []
        while len(seen) < stop:
            for starts in sampler:
                seen.append(starts.tolist())
                if len(seen) == stop:
                    break
        resumed = WindowSampler(n, BLOCK, 4, seed=9)
        resumed.load_state_dict(sampler.state_dict())
        while len(seen) < len(expected):
            seen += _epoch(resumed)
        assert seen == expected, stop


def test_state_dict_refuses_a_different_layout():
    state = WindowSampler(len(_tokens(20)), BLOCK, 4, seed=9).state_dict()
    with pytest.raises(MlprojectError, match="batch_size=4 in the checkpoint, 2 now"):
        WindowSampler(len(_tokens(20)), BLOCK, 2, seed=9).load_state_dict(state)


def test_too_little_data_for_one_batch_is_a_config_error():
    with pytest.raises(ConfigError, match="fewer than batch_size x world_size=8"):
        WindowSampler(len(_tokens(7)), BLOCK, 4, seed=0, world_size=2)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_batch_loader_yields_the_sampler_batches(prefetch):
    tokens = _tokens(20)
    expected = [get_batch(tokens, s, BLOCK) for s in WindowSampler(len(tokens), BLOCK, 4, seed=2)]
    loader = BatchLoader(tokens, WindowSampler(len(tokens), BLOCK, 4, seed=2), prefetch=prefetch)
    got = list(loader)
    assert len(got) == len(expected) == loader.steps_per_epoch
    assert all(torch.equal(gx, ex) and torch.equal(gy, ey) for (gx, gy), (ex, ey) in zip(got, expected))


def test_batch_loader_state_counts_consumed_not_prefetched_batches():
    tokens = _tokens(40)
    reference = [x for x, _ in BatchLoader(tokens, WindowSampler(len(tokens), BLOCK, 2, seed=4), prefetch=0)]
    loader = BatchLoader(tokens, WindowSampler(len(tokens), BLOCK, 2, seed=4), prefetch=4)
    for i, _ in enumerate(loader):
        if i == 2:
            state = loader.state_dict()
            break
    assert state["position"] == 3
    resumed = BatchLoader(tokens, WindowSampler(len(tokens), BLOCK, 2, seed=4), prefetch=4)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for (a, _), b in zip(resumed, reference[3:]))
    assert loader.state_dict() == state  # abandoning the loop did not count the prefetched batches
