"""The training stage: `trainer` (the loop and its callback interface), `optim` (recipes, AdamW,
warmup + cosine), `checkpoint` (atomic, resumable files), `device` (device and precision),
`throughput` (tokens/s, MFU, peak memory), `distributed` (DDP under torchrun).

Nothing is imported here, so reading a config does not pay for importing torch.
"""
