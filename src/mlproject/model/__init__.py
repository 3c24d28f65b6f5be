"""The model stage: `config` (GPTConfig, presets), `gpt` (the GPT-2/GPT-3 model and its KV
cache), `checkpoint` (checkpoint files: save, load, rebuild the model), `hf` (Hugging Face
GPT-2/Llama import), `original` (checkpoints of the original suite), `summary` (the presets table).

Nothing is imported here, so reading a config does not pay for importing torch.
"""
