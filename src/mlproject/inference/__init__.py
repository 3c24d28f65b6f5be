"""The inference stage: `sampling` (temperature, top-k, top-p, repetition penalty) and
`generate` (batched generation with the KV cache, text in and out).

Nothing is imported here, so reading a config does not pay for importing torch.
"""
