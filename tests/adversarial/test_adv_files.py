"""Bad files and paths: missing, a folder where a file belongs (and the reverse), text where a
checkpoint belongs, a pickle that would run code, folders holding the user's files as an
output, paths under a regular file. Each ends in one line naming the path, or in success;
the user's files stay as they were (a pickle's payload would add a file to them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from adversary import Case, err, ok, run_case

T = ("train", "--config", "{yaml}")
CKPT = ("--checkpoint", "{ckpt}", "--tokenizer-path", "{tok}")
ZERO_RUN = "0123456789abcdef0123456789abcdef"

RESUME = [
    err("resume-from-missing-file", *T, "--resume-from", "{missing}", names="missing.pt", code=2),
    err("resume-from-etc-passwd", *T, "--resume-from", "../../etc/passwd", names="../../etc/passwd", code=2),
    err("resume-from-text-file", *T, "--resume-from", "{text}", names="important.txt", code=2),
    err("resume-from-pickle-payload", *T, "--resume-from", "{evil}", names="evil.pt", code=2),
    err("resume-from-folder", *T, "--resume-from", "{empty_dir}", names="empty_dir", code=2),
    err("resume-from-binary", *T, "--resume-from", "{binary}", names="binary.bin", code=2),
    err("resume-from-unknown-run-id", *T, "--resume-from", ZERO_RUN, names=ZERO_RUN, code=2),
]

TRAIN_PATHS = [
    err("train-tokenizer-missing", *T, "--tokenizer-path", "{missing}", names="missing.pt", code=2),
    err("train-tokenizer-garbage", *T, "--tokenizer-path", "{garbage}", names="garbage.json", code=2),
    err("train-local-path-missing", *T, "--local-path", "{missing}", names="missing.pt", code=2),
    err("train-local-path-empty-file", *T, "--local-path", "{empty}", names="empty.txt", code=2),
    err("train-local-path-folder", *T, "--local-path", "{empty_dir}", names="empty_dir", code=2),
    err("train-local-path-glob-matching-nothing", *T, "--local-path", "{user}/*.nomatch", names="*.nomatch", code=2),
    err("train-local-text-read-as-json", *T, "--local-format", "json", names="corpus.txt", code=2),
    err("train-cache-dir-under-a-file", *T, "--cache-dir", "{file}/cache", names="afile", code=2),
    err("train-cache-env-under-a-file", *T, env={"MLPROJECT_CACHE_DIR": "{file}/cache"}, names="afile", code=2),
    # local copies are written only when asked: a bad local root or a run name too long for their
    # file names is refused then, before any run exists
    err("train-local-dir-env-under-a-file", *T, "--local-copies", env={"MLPROJECT_LOCAL_DIR": "{file}/local"},
        names="afile", code=2),
    err("train-output-dir-under-a-file", *T, "--output-dir", "{file}/runs", names="afile", code=2),
    err("train-output-dir-unwritable", *T, "--output-dir", "/proc/adversarial-runs", names="/proc/adversarial-runs",
        code=2),
    err("train-run-name-300-chars", *T, "--local-copies", "--run-name", "{long}", names="run_name", code=2),
    ok("train-run-name-300-chars-without-local-copies", *T, "--run-name", "{long}"),
    ok("train-run-name-with-dots-and-slashes", *T, "--run-name", "../../escape"),
]

GENERATE = [
    err("generate-checkpoint-missing", "generate", "--checkpoint", "{missing}", names="missing.pt", code=2),
    err("generate-checkpoint-text", "generate", "--checkpoint", "{text}", "--tokenizer-path", "{tok}",
        names="important.txt", code=2),
    err("generate-checkpoint-pickle-payload", "generate", "--checkpoint", "{evil}", "--tokenizer-path", "{tok}",
        names="evil.pt", code=2),
    err("generate-checkpoint-folder", "generate", "--checkpoint", "{empty_dir}", names="empty_dir", code=2),
    err("generate-checkpoint-empty-file", "generate", "--checkpoint", "{empty}", "--tokenizer-path", "{tok}",
        names="empty.txt", code=2),
    err("generate-tokenizer-too-small", "generate", "--checkpoint", "{ckpt}", "--tokenizer-path", "{small_tok}",
        names="small_tokenizer.json", code=2),
    err("generate-tokenizer-garbage", "generate", "--checkpoint", "{ckpt}", "--tokenizer-path", "{garbage}",
        names="garbage.json", code=2),
    err("generate-tokenizer-missing", "generate", "--checkpoint", "{ckpt}", "--tokenizer-path", "{missing}",
        names="missing.pt", code=2),
    err("generate-size-flag-contradicts-checkpoint", "generate", *CKPT, "--n-layer", "5", names="n_layer=5", code=2),
    ok("generate-from-a-checkpoint", "generate", *CKPT, "--max-new-tokens", "4", "--prompt", "def",
       "--device", "cpu"),
    ok("generate-from-an-empty-prompt", "generate", *CKPT, "--max-new-tokens", "2", "--prompt", "",
       "--device", "cpu"),
]

EVALUATE = [
    err("evaluate-checkpoint-missing", "evaluate", "--checkpoint", "{missing}", names="missing.pt", code=2),
    err("evaluate-checkpoint-pickle-payload", "evaluate", "--checkpoint", "{evil}", "--tokenizer-path", "{tok}",
        names="evil.pt", code=2),
    err("evaluate-local-path-missing", "evaluate", *CKPT, "--local-path", "{missing}", names="missing.pt", code=2),
    err("evaluate-wrong-sha256", "evaluate", *CKPT, "--expected-sha256", "0" * 64, names="0" * 64, code=2),
    ok("evaluate-a-checkpoint-on-a-local-file", "evaluate", *CKPT, "--local-path", "{corpus}", "--local-format",
       "text", "--max-tokens", "600", "--block-size", "32", "--batch-size", "4", "--device", "cpu",
       "--log-to-mlflow", "false"),
]

EXPORT = [
    err("export-into-user-folder-with-config-json", "export-hf", *CKPT, "--output", "{hf_config}",
        names="hf_config", code=2),
    err("export-into-user-folder-without-config-json", "export-hf", *CKPT, "--output", "{hf_plain}",
        names="hf_plain", code=2),
    err("export-into-the-user-home", "export-hf", *CKPT, "--output", "{user}", names="{user}", code=2),
    err("export-onto-a-regular-file", "export-hf", *CKPT, "--output", "{file}", names="afile", code=2),
    err("export-under-a-regular-file", "export-hf", *CKPT, "--output", "{file}/hf", names="afile", code=2),
    # an empty optional value means unset (as MLflow passes an empty parameter): the default folder
    ok("export-to-an-empty-path-is-the-default-folder", "export-hf", *CKPT, "--output", ""),
    err("export-to-the-working-directory", "export-hf", *CKPT, "--output", ".", names="output", code=2),
    err("export-a-pickle-payload", "export-hf", "--checkpoint", "{evil}", "--tokenizer-path", "{tok}", "--output", "hf",
        names="evil.pt", code=2),
    ok("export-a-checkpoint-into-a-new-folder", "export-hf", *CKPT, "--output", "hf-out"),
    ok("export-a-run-into-a-new-folder", "export-hf", "--run-id", "{run_id}", "--output", "hf-run"),
]

OTHERS = [
    err("plot-results-missing", "plot", "--results", "{missing}", names="missing.pt", code=2),
    err("plot-results-garbage", "plot", "--results", "{garbage}", names="garbage.json", code=2),
    err("plot-results-text", "plot", "--results", "{text}", names="important.txt", code=2),
    err("plot-output-under-a-file", "plot", "--parent-run-id", "{parent}", "--output-dir", "{file}/plots",
        names="afile", code=2),
    err("import-hf-folder-missing", "import-hf", "--model-dir", "{missing}", "--output", "x.pt", names="missing.pt",
        code=2),
    err("import-hf-folder-without-config", "import-hf", "--model-dir", "{hf_plain}", "--output", "x.pt",
        names="hf_plain", code=2),
    err("import-hf-empty-config-json", "import-hf", "--model-dir", "{hf_config}", "--output", "x.pt",
        names="hf_config", code=2),
    err("import-hf-a-file", "import-hf", "--model-dir", "{file}", "--output", "x.pt", names="afile", code=2),
    err("import-original-missing", "import-original", "--checkpoint", "{missing}", "--output", "x.pt",
        names="missing.pt", code=2),
    err("import-original-text", "import-original", "--checkpoint", "{text}", "--output", "x.pt",
        names="important.txt", code=2),
    err("import-original-our-own-checkpoint", "import-original", "--checkpoint", "{ckpt}", "--output", "x.pt",
        names="last.pt", code=2),
    err("import-original-pickle-payload", "import-original", "--checkpoint", "{evil}", "--output", "x.pt",
        names="evil.pt", code=2),
    err("dataloaders-local-path-missing", "dataloaders", "--dataset", "local_jsonl", "--local-path", "{missing}",
        names="missing.pt", code=2),
    ok("dataloaders-preview-of-a-local-corpus", "dataloaders", "--dataset", "local_jsonl", "--local-path",
       "{corpus}", "--local-format", "text", "--vocab-size", "1024", "--preview-batches", "1", "--block-size",
       "16", "--batch-size", "2"),
    ok("datasets-listing", "datasets"),
    err("pipeline-a-train-config", "pipeline", "--config", "{yaml}", names="train.yaml", code=2),
]

CASES = [case.param() for case in RESUME + TRAIN_PATHS + GENERATE + EVALUATE + EXPORT + OTHERS]


@pytest.mark.parametrize("case", CASES)
def test_bad_file_or_path(case: Case, world, store_uri, capfd) -> None:
    run_case(case, world, user=Path(world["user"]), store_uri=store_uri, capfd=capfd)


def _pipeline(path: Path, steps: list[dict]) -> str:
    path.write_text(yaml.safe_dump({"pipeline": {"name": "adversarial"}, "steps": steps}))
    return str(path)


@pytest.mark.parametrize("steps, names", [
    ([{"id": "a", "entry_point": "teleport", "parameters": {}}], "teleport"),
    ([{"id": "a", "entry_point": "plot", "needs": ["b"]}, {"id": "b", "entry_point": "plot", "needs": ["a"]}],
     "cycle"),
    ([{"id": "a", "entry_point": "plot", "needs": ["ghost"]}], "ghost"),
    ([{"id": "a", "entry_point": "plot"}, {"id": "a", "entry_point": "plot"}], "step id 'a'"),
], ids=["unknown-entry-point", "dependency-cycle", "unknown-dependency", "duplicate-step-id"])
def test_a_broken_pipeline_file(world, store_uri, capfd, tmp_path, steps, names) -> None:
    config = _pipeline(tmp_path / "pipeline.yaml", steps)
    run_case(err("pipeline", "pipeline", "--config", config, names=names, code=2), world, user=Path(world["user"]),
             store_uri=store_uri, capfd=capfd)


def test_export_twice_into_the_same_folder_replaces_its_own_export(world, store_uri, capfd, tmp_path) -> None:
    user = Path(world["user"])
    for _ in range(2):
        run_case(ok("export", "export-hf", *CKPT, "--output", "hf-twice"), world, user=user, store_uri=store_uri,
                 capfd=capfd)
    assert (tmp_path / "hf-twice" / "config.json").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".") or "tmp" in p.name]


def test_export_without_output_writes_hf_under_the_local_folder(world, store_uri, capfd, tmp_path) -> None:
    user = Path(world["user"])
    for _ in range(2):  # the second replaces the suite's own export
        run_case(ok("export", "export-hf", *CKPT), world, user=user, store_uri=store_uri, capfd=capfd)
    assert (tmp_path / "mlproject-outputs" / "hf" / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["mlproject-outputs"]
