"""What a training run prints: a tqdm bar on terminals (or when asked), plain periodic lines otherwise."""

from __future__ import annotations

import sys


def format_seconds(sec: float) -> str:
    sec = int(max(sec, 0))
    h, rem = divmod(sec, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """The progress of `total` steps from `initial`; prints nothing unless `enabled` (the main rank)."""

    def __init__(self, mode: str, total: int, initial: int, enabled: bool) -> None:
        use_bar = mode == "bar" or (mode == "auto" and sys.stderr.isatty())
        self.bar = None
        self.enabled = enabled
        self.total = total
        if enabled and use_bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def write(self, line: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def log(self, step: int, m: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{m['train_loss']:.4f}", tok_s=f"{m['tokens_per_sec']:,.0f}", refresh=False)
            return
        eta = (self.total - step) * m["ms_per_step"] / 1000
        self.write(f"step {step}/{self.total} | loss {m['train_loss']:.4f} | lr {m['lr']:.2e} | "
                   f"{m['tokens_per_sec']:,.0f} tok/s | mfu {m['mfu']:.1%} | eta {format_seconds(eta)}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
