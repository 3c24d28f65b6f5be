"""GPT-2 / GPT-3 research suite on MLflow."""

__version__ = "0.1.0"
