"""Bad values, as flags and as YAML: each refused with one line naming it, before any run exists
(exit code 2), whatever the command."""

from __future__ import annotations

from pathlib import Path

import pytest

from adversary import Case, err, ok, run_case

T = ("train", "--config", "{yaml}")  # the tiny train config of the user's folder


def bad_train(id: str, flag: str, value: str, names: str | tuple[str, ...] | None = None) -> Case:
    """`train` with one bad flag value: refused naming the field and the value."""
    return err(f"train-{id}", *T, flag, value, names=names or (flag[2:].replace("-", "_"), value), code=2)


TRAIN_FLAGS = [
    bad_train("lr-nan", "--learning-rate", "nan"),
    bad_train("lr-negative-exponent", "--learning-rate", "-1e-3", names="learning_rate=-0.001"),
    bad_train("lr-zero", "--learning-rate", "0"),
    bad_train("lr-overflow", "--learning-rate", "1e999"),
    bad_train("lr-word", "--lr", "fast", names=("learning_rate", "fast")),
    bad_train("wd-negative", "--weight-decay", "-1"),
    bad_train("wd-inf", "--weight-decay", "inf"),
    bad_train("max-steps-negative", "--max-steps", "-5"),
    bad_train("max-steps-zero", "--max-steps", "0"),
    bad_train("max-steps-fraction", "--max-steps", "1.5"),
    bad_train("batch-size-zero", "--batch-size", "0"),
    bad_train("batch-size-negative", "--batch-size", "-1"),
    bad_train("block-size-zero", "--block-size", "0"),
    bad_train("n-layer-zero", "--n-layer", "0"),
    bad_train("n-head-not-dividing", "--n-head", "3"),
    bad_train("d-model-negative", "--d-model", "-64"),
    bad_train("dropout-above-one", "--dropout", "1.5"),
    bad_train("dropout-negative", "--dropout", "-0.1"),
    bad_train("beta1-one", "--beta1", "1.0"),
    bad_train("beta2-nan", "--beta2", "nan"),
    bad_train("grad-clip-negative", "--grad-clip", "-1"),
    bad_train("label-smoothing-above-one", "--label-smoothing", "1.5"),
    bad_train("warmup-negative", "--warmup", "-1"),
    bad_train("min-lr-ratio-two", "--min-lr-ratio", "2"),
    bad_train("eval-interval-zero", "--eval-interval", "0"),
    bad_train("eval-batches-negative", "--eval-batches", "-2"),
    bad_train("log-interval-zero", "--log-interval", "0"),
    bad_train("save-every-negative", "--save-every", "-1"),
    bad_train("device-tpu", "--device", "tpu"),
    bad_train("precision-unknown", "--precision", "fp7"),
    bad_train("progress-unknown", "--progress", "sparkle"),
    bad_train("model-version-unknown", "--model-version", "gpt5"),
    bad_train("norm-type-unknown", "--norm-type", "batchnorm"),
    bad_train("pos-encoding-unknown", "--pos-encoding", "spiral"),
    bad_train("attention-impl-unknown", "--attention-impl", "magic"),
    bad_train("rope-theta-negative", "--rope-theta", "-1"),
    bad_train("norm-eps-nan", "--norm-eps", "nan"),
    bad_train("mlp-expansion-zero", "--mlp-expansion", "0"),
    bad_train("vocab-size-too-small", "--vocab-size", "100"),
    bad_train("dataset-unknown", "--dataset", "nosuchdataset"),
    bad_train("num-threads-negative", "--num-threads", "-1"),
    bad_train("grad-accum-zero", "--grad-accum-steps", "0"),
    bad_train("epochs-negative", "--epochs", "-1"),
    bad_train("bias-not-a-bool", "--bias", "perhaps"),
    bad_train("lease-timeout-nan", "--lease-timeout", "nan"),
    bad_train("lease-heartbeat-zero", "--lease-heartbeat", "0"),
    bad_train("system-metrics-interval-negative", "--system-metrics-interval", "-1"),
    bad_train("peak-flops-negative", "--peak-flops", "-1"),
    bad_train("early-stopping-negative", "--early-stopping-patience", "-1"),
    bad_train("val-fraction-above-one", "--val-fraction", "1.5"),
    bad_train("tokenizer-sample-zero", "--tokenizer-sample-mb", "0"),
    bad_train("stop-at-step-negative", "--stop-at-step", "-1"),
    bad_train("local-format-xml", "--local-format", "xml"),
    bad_train("misspelt-flag", "--lerning-rate", "0.1", names="--lerning-rate"),
    bad_train("device-cuda-99", "--device", "cuda:99"),
]

YAML_FILES = [
    err("train-config-missing", "train", "--config", "{missing}", names="missing.pt", code=2),
    err("train-config-is-a-folder", "train", "--config", "{empty_dir}", names="empty_dir", code=2),
    err("train-config-bad-syntax", "train", "--config", "{bad_yaml}", names="bad.yaml", code=2),
    err("train-config-a-list", "train", "--config", "{list_yaml}", names="list.yaml", code=2),
    err("train-config-python-tag", "train", "--config", "{evil_yaml}", names="evil.yaml", code=2),
    err("train-config-binary", "train", "--config", "{binary}", names="binary.bin", code=2),
    err("generate-config-bad-syntax", "generate", "--config", "{bad_yaml}", names="bad.yaml", code=2),
    err("pipeline-config-python-tag", "pipeline", "--config", "{evil_yaml}", names="evil.yaml", code=2),
    err("pipeline-config-missing", "pipeline", "--config", "{missing}", names="missing.pt", code=2),
    err("plot-config-a-list", "plot", "--config", "{list_yaml}", names="list.yaml", code=2),
]

OTHER_COMMANDS = [
    err("no-command", names="COMMAND", code=2),
    err("unknown-command", "trian", names="trian", code=2),
    err("generate-temperature-nan", "generate", "--checkpoint", "{ckpt}", "--temperature", "nan",
        names=("temperature", "nan"), code=2),
    err("generate-temperature-negative", "generate", "--checkpoint", "{ckpt}", "--temperature", "-1",
        names=("temperature", "-1"), code=2),
    err("generate-top-k-zero", "generate", "--checkpoint", "{ckpt}", "--top-k", "0", names="top_k", code=2),
    err("generate-top-p-above-one", "generate", "--checkpoint", "{ckpt}", "--top-p", "1.5",
        names=("top_p", "1.5"), code=2),
    err("generate-top-p-zero", "generate", "--checkpoint", "{ckpt}", "--top-p", "0", names="top_p", code=2),
    err("generate-max-new-tokens-negative", "generate", "--checkpoint", "{ckpt}", "--max-new-tokens", "-1",
        names=("max_new_tokens", "-1"), code=2),
    err("generate-strategy-unknown", "generate", "--checkpoint", "{ckpt}", "--strategy", "psychic",
        names=("strategy", "psychic"), code=2),
    err("generate-greedy-with-temperature", "generate", "--checkpoint", "{ckpt}", "--strategy", "greedy",
        "--temperature", "0.8", names=("temperature=0.8", "greedy"), code=2),
    err("generate-repetition-penalty-zero", "generate", "--checkpoint", "{ckpt}", "--repetition-penalty", "0",
        names="repetition_penalty", code=2),
    err("generate-no-source", "generate", names="--run-id", code=2),
    err("generate-two-sources", "generate", "--run-id", "{run_id}", "--checkpoint", "{ckpt}", names="checkpoint",
        code=2),
    err("evaluate-split-unknown", "evaluate", "--checkpoint", "{ckpt}", "--split", "test",
        names=("split", "test"), code=2),
    err("evaluate-max-tokens-negative", "evaluate", "--checkpoint", "{ckpt}", "--max-tokens", "-1",
        names=("max_tokens", "-1"), code=2),
    err("evaluate-batch-size-zero", "evaluate", "--checkpoint", "{ckpt}", "--batch-size", "0", names="batch_size",
        code=2),
    err("dataloaders-preview-negative", "dataloaders", "--preview-batches", "-1",
        names=("preview_batches", "-1"), code=2),
    err("dataloaders-dataset-unknown", "dataloaders", "--dataset", "nosuch", names="nosuch", code=2),
    err("dataloaders-batch-size-zero", "dataloaders", "--batch-size", "0", names="batch_size", code=2),
    err("summary-preset-unknown", "summary", "--presets", "colossal", names="colossal", code=2),
    err("summary-block-size-zero", "summary", "--block-size", "0", names="block_size", code=2),
    err("summary-model-version-unknown", "summary", "--model-versions", "gpt9", names="gpt9", code=2),
    err("server-port-negative", "server", "--port", "-1", names=("port", "-1"), code=2),
    err("server-port-too-large", "server", "--port", "70000", names=("port", "70000"), code=2),
    err("server-workers-zero", "server", "--workers", "0", names="workers", code=2),
    err("server-startup-timeout-nan", "server", "--startup-timeout", "nan", names=("startup_timeout", "nan"), code=2),
    err("reproduce-no-run", "reproduce", names="--run-id", code=2),
    err("reproduce-rtol-nan", "reproduce", "--run-id", "{run_id}", "--rtol", "nan", names=("rtol", "nan"), code=2),
    err("reproduce-source-unknown", "reproduce", "--run-id", "{run_id}", "--source", "cloud", names="cloud", code=2),
    err("reproduce-max-steps-zero", "reproduce", "--run-id", "{run_id}", "--max-steps", "0", names="max_steps", code=2),
    err("plot-kind-unknown", "plot", "--parent-run-id", "{parent}", "--kind", "pie", names="pie", code=2),
    err("plot-no-source", "plot", names="parent_run_id", code=2),
    err("compare-duplicate-seeds", "compare", "--config", "{yaml}", "--seeds", "7", "7", names="seeds=[7, 7]", code=2),
    err("compare-duplicate-models", "compare", "--config", "{yaml}", "--models", "gpt2", "gpt2", names="models=",
        code=2),
    err("compare-unknown-model", "compare", "--config", "{yaml}", "--models", "gpt2", "gpt9", names="gpt9", code=2),
    err("ablate-duplicate-seeds", "ablate", "--config", "{yaml}", "--seeds", "7", "7", names="seeds=[7, 7]", code=2),
    err("compare-alpha-one", "compare", "--config", "{yaml}", "--alpha", "1", names="alpha", code=2),
    err("tune-trials-zero", "tune", "--config", "{yaml}", "--n-trials", "0", names="n_trials", code=2),
    err("pipeline-no-config", "pipeline", names="config", code=2),
    err("import-hf-no-output", "import-hf", "--model-dir", "{hf_config}", names="output", code=2),
]

CASES = [case.param() for case in TRAIN_FLAGS + YAML_FILES + OTHER_COMMANDS]


@pytest.mark.parametrize("case", CASES)
def test_bad_value(case: Case, world, store_uri, capfd) -> None:
    run_case(case, world, user=Path(world["user"]), store_uri=store_uri, capfd=capfd)
