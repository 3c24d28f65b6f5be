"""The training stage: `resolve` (the concrete configs a run trains), `trainer` (the loop and its
callback interface), `checkpoint` (the training state: atomic, resumable files), `evaluation`
(validation on fixed windows), `optim` (recipes, AdamW, warmup + cosine), `device` (device and
precision), `throughput` (tokens/s, MFU, peak memory), `distributed` (DDP under torchrun),
`progress` (what a run prints), `preflight` (config-against-data checks before a run exists).

Nothing is imported here, so reading a config does not pay for importing torch.
"""
