"""Batches from a flat token array: contiguous windows, a seeded epoch order, exact resumption.

The token array is cut into non-overlapping windows of block_size + 1 tokens (window i starts at
i * block_size; consecutive windows share one token, the last target of one being the first
input of the next). Each epoch visits every window once, in an order drawn from a private
`torch.Generator` seeded with (seed, epoch): the data order does not depend on the global torch
RNG, so changing model init (or dropout) never changes which batches a run sees. Under DDP each
rank takes every world_size-th window of the epoch's permutation (disjoint, equal counts).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from mlproject.errors import ConfigError, MlprojectError


class WindowSampler:
    """Start indices of training windows, batch_size per step, epoch by epoch, for one rank.

    `position` counts the batches of the current epoch already handed out; iterating yields the
    rest of the current epoch, then moves to the next epoch. `state_dict()` taken after a batch
    was consumed resumes exactly at the following batch.
    """

    def __init__(self, num_tokens: int, block_size: int, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1) -> None:
        for name, value in (("block_size", block_size), ("batch_size", batch_size), ("world_size", world_size)):
            if value <= 0:
                raise ConfigError(f"{name}={value} must be positive")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank={rank} must be in [0, world_size={world_size})")
        if seed < 0:
            raise ConfigError(f"data seed={seed} must be >= 0")
        self.num_tokens = num_tokens
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        # window i = tokens[i*T : i*T + T + 1] must fit: i*T + T + 1 <= N
        self.num_windows = max(num_tokens - 1, 0) // block_size
        self.windows_per_rank = self.num_windows // world_size  # the remainder is dropped every epoch
        self.steps_per_epoch = self.windows_per_rank // batch_size  # drop_last
        if self.steps_per_epoch == 0:
            raise ConfigError(f"{num_tokens} tokens make {self.num_windows} windows of block_size+1="
                              f"{block_size + 1}, fewer than batch_size x world_size={batch_size * world_size}; "
                              "lower block_size or batch_size, or use more data")
        self.epoch = 0
        self.position = 0

    def epoch_starts(self, epoch: int) -> torch.Tensor:
        """All of this rank's batches of `epoch`: (steps_per_epoch, batch_size) token offsets."""
        entropy = np.random.SeedSequence([self.seed, epoch]).generate_state(1, dtype=np.uint64)[0]
        generator = torch.Generator().manual_seed(int(entropy))
        order = torch.randperm(self.num_windows, generator=generator)
        mine = order[self.rank : self.windows_per_rank * self.world_size : self.world_size]
        mine = mine[: self.steps_per_epoch * self.batch_size]
        return (mine * self.block_size).view(self.steps_per_epoch, self.batch_size)

    def remaining(self) -> torch.Tensor:
        """The current epoch's batches not handed out yet (moving to the next epoch if none are left)."""
        if self.position >= self.steps_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        return self.epoch_starts(self.epoch)[self.position :]

    def advance(self) -> None:
        """Mark one batch as consumed; the epoch ends after its last batch."""
        self.position += 1
        if self.position >= self.steps_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        for starts in self.remaining():
            self.advance()  # before yielding: a checkpoint taken while this batch trains resumes after it
            yield starts

    def __len__(self) -> int:
        return self.steps_per_epoch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "block_size": self.block_size,
                "batch_size": self.batch_size, "num_windows": self.num_windows, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict()`; a different data or batch layout cannot resume exactly."""
        for key in ("seed", "block_size", "batch_size", "num_windows", "world_size"):
            if key in state and int(state[key]) != getattr(self, key):
                raise MlprojectError(f"cannot resume the data order: {key}={state[key]} in the checkpoint, "
                                     f"{getattr(self, key)} now")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def get_batch(tokens: np.ndarray, starts: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets for windows starting at `starts`: two int64 (B, T) tensors."""
    index = starts.numpy()[:, None] + np.arange(block_size + 1)  # (B, T+1)
    window = tokens[index].astype(np.int64)  # (B, T+1): one gather from the memmap
    x = torch.from_numpy(np.ascontiguousarray(window[:, :-1]))  # (B, T)
    y = torch.from_numpy(np.ascontiguousarray(window[:, 1:]))  # (B, T), shifted by one
    return x, y


class BatchLoader:
    """(x, y) batches of a sampler's epoch, prepared `prefetch` batches ahead on a background thread.

    The sampler only advances when a batch is handed to the caller, so `state_dict()` describes
    batches actually consumed, never the prefetched ones. `pin_memory` (page-locked buffers for
    faster, non_blocking host-to-GPU copies) applies when CUDA is available.
    """

    def __init__(self, tokens: np.ndarray, sampler: WindowSampler, *, prefetch: int = 2,
                 pin_memory: bool = False) -> None:
        if prefetch < 0:
            raise ConfigError(f"prefetch={prefetch} must be >= 0")
        self.tokens = tokens
        self.sampler = sampler
        self.prefetch = prefetch
        self.pin_memory = pin_memory and torch.cuda.is_available()

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.steps_per_epoch

    def __len__(self) -> int:
        return self.sampler.steps_per_epoch

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)

    def _make(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = get_batch(self.tokens, starts, self.sampler.block_size)
        if self.pin_memory:
            x, y = x.pin_memory(), y.pin_memory()
        return x, y

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self.sampler.remaining()
        if self.prefetch == 0:
            for starts in batches:
                batch = self._make(starts)
                self.sampler.advance()
                yield batch
            return
        ready: queue.Queue[Any] = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def offer(item: Any) -> bool:
            """Queue `item`, waiting for room unless the consumer has gone."""
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for starts in batches:
                    if not offer(self._make(starts)):
                        return
            except BaseException as exc:  # handed to the consumer, raised there
                offer(exc)

        worker = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
        worker.start()
        try:
            for _ in range(len(batches)):
                item = ready.get()
                if isinstance(item, BaseException):
                    raise item
                self.sampler.advance()
                yield item
        finally:
            stop.set()
            worker.join()
