"""The data stage: dataset registry, document sources, BPE tokenizer, token caches and batches."""
