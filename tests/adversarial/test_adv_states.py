"""Bad states: a run another live process trains, a sweep's own parent and planned children,
ids of no run, runs of the wrong kind; and credentials: a password in the tracking URI and a
token in the environment reach no output, whichever way a command fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from adversary import FTP_URI, SECRET_URI, TOKEN, Case, err, ok, run_case

T = ("train", "--config", "{yaml}")
ZERO_RUN = "0123456789abcdef0123456789abcdef"
SECRET = {"MLFLOW_TRACKING_URI": SECRET_URI}

RUN_STATES = [
    err("resume-a-run-another-process-trains", *T, "--resume-from", "{held}", names="another process", code=2),
    err("resume-a-planned-sweep-parent", *T, "--resume-from", "{parent}", names="compare --resume", code=2),
    err("resume-a-planned-sweep-child", *T, "--resume-from", "{child}", names="--child-run-id", code=2),
    err("child-run-id-of-no-run", "train", "--child-run-id", ZERO_RUN, names=ZERO_RUN, code=2),
    err("child-run-id-of-a-standalone-run", "train", "--child-run-id", "{run_id}", names="{run_id}", code=2),
    err("child-run-id-of-a-sweep-parent", "train", "--child-run-id", "{parent}", names="{parent}", code=2),
    err("child-run-id-with-a-config", "train", "--child-run-id", "{child}", "--config", "{yaml}", names="--config", code=2),
    err("child-run-id-not-hex", "train", "--child-run-id", "../../etc", names="../../etc", code=2),
    err("run-id-in-train-names-child-run-id", "train", "--run-id", ZERO_RUN, names="--child-run-id", code=2),
    err("run_id-in-train-names-child-run-id", "train", "--run_id", ZERO_RUN, names="--child-run-id", code=2),
    err("aggregate-a-standalone-run", "compare", "--aggregate", "{run_id}", names="{run_id}", code=2),
    err("aggregate-no-run", "compare", "--aggregate", ZERO_RUN, names=ZERO_RUN, code=2),
    err("plot-a-standalone-run", "plot", "--parent-run-id", "{run_id}", names="{run_id}", code=2),
    err("plot-no-run", "plot", "--parent-run-id", ZERO_RUN, names=ZERO_RUN, code=2),
    err("generate-no-run", "generate", "--run-id", ZERO_RUN, names=ZERO_RUN, code=2),
    err("generate-a-sweep-parent", "generate", "--run-id", "{parent}", names="{parent}", code=2),
    err("generate-unknown-model-uri", "generate", "--model-uri", "models:/no-such-model/1", names="no-such-model",
        code=2),
    err("generate-model-uri-a-local-file", "generate", "--model-uri", "file:///etc/passwd", names="file:///etc/passwd",
        code=2),
    err("evaluate-no-run", "evaluate", "--run-id", ZERO_RUN, names=ZERO_RUN, code=2),
    err("export-no-run", "export-hf", "--run-id", ZERO_RUN, "--output", "hf", names=ZERO_RUN, code=2),
    err("reproduce-no-run-id", "reproduce", "--run-id", ZERO_RUN, names=ZERO_RUN, code=2),
    err("reproduce-a-planned-sweep", "reproduce", "--run-id", "{parent}", names="{parent}", code=2),
    ok("generate-from-a-finished-run", "generate", "--run-id", "{run_id}", "--max-new-tokens", "3", "--prompt",
       "def", "--device", "cpu"),
]

SECRETS = [
    err("secret-uri-train", *T, env=SECRET, names="127.0.0.1:9"),
    err("secret-uri-generate", "generate", "--run-id", "{run_id}", env=SECRET, names="127.0.0.1:9"),
    err("secret-uri-plot", "plot", "--parent-run-id", "{parent}", env=SECRET, names="127.0.0.1:9"),
    err("secret-uri-export", "export-hf", "--run-id", "{run_id}", "--output", "hf", env=SECRET, names="127.0.0.1:9"),
    err("secret-uri-evaluate", "evaluate", "--run-id", "{run_id}", env=SECRET, names="127.0.0.1:9"),
    err("secret-uri-compare-plan", "compare", "--config", "{yaml}", "--plan-only", env=SECRET, names="127.0.0.1:9"),
    err("secret-uri-reproduce", "reproduce", "--run-id", "{run_id}", env=SECRET, names="127.0.0.1:9"),
    err("secret-uri-bad-value", *T, "--learning-rate", "nan", env=SECRET, names=("learning_rate", "nan"),
        code=2),
    err("secret-uri-unsupported-scheme", *T, env={"MLFLOW_TRACKING_URI": FTP_URI}, names="ftp://***@127.0.0.1/x"),
    err("tracking-uri-sqlite-under-a-file", *T, env={"MLFLOW_TRACKING_URI": "sqlite:///{file}/mlflow.db"},
        names="afile"),
    err("tracking-uri-not-a-uri", *T, env={"MLFLOW_TRACKING_URI": "::not a uri::"}, names="::not a uri::"),
    err("token-pasted-as-a-run-id", "plot", "--parent-run-id", TOKEN, names="***", code=2),
    err("token-pasted-as-a-run-name", *T, "--run-name", TOKEN, "--max-steps", "-1", names="max_steps", code=2),
]

CASES = [case.param() for case in RUN_STATES + SECRETS]


@pytest.mark.parametrize("case", CASES)
def test_bad_state_or_secret(case: Case, world, store_uri, capfd) -> None:
    run_case(case, world, user=Path(world["user"]), store_uri=store_uri, capfd=capfd)
