"""`mlproject datasets` and `mlproject dataloaders` through the CLI entry point."""

from __future__ import annotations

from mlproject.cli import main


def test_datasets_command_prints_the_registry_table(capsys, seeded_cache):
    assert main(["datasets", "--cache-dir", str(seeded_cache)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["key", "source", "splits", "vocab", "network", "cached"]
    assert any(line.startswith("pydocs ") and " no " in line for line in lines)
    assert f"cache: {seeded_cache}" in out


def test_dataloaders_command_prepares_pydocs_and_previews_batches(capsys, seeded_cache):
    argv = ["dataloaders", "--dataset", "pydocs", "--vocab-size", "512", "--max-train-docs", "40",
            "--block-size", "32", "--batch-size", "3", "--preview-batches", "2", "--seed", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "dataset pydocs (python-stdlib), val split heldout:0.05@seed1234" in out
    assert "batch 0: x (3, 32) y (3, 32) torch.int64, 96 tokens" in out and "batch 1:" in out
    assert "targets shifted by one: True" in out
    assert out.count("example 0: ") == 2
    assert main(argv) == 0  # the second run reuses the caches
    assert "reusing token caches" in capsys.readouterr().out
    assert main(["datasets"]) == 0
    assert any(line.startswith("pydocs ") and "yes (1)" in line for line in capsys.readouterr().out.splitlines())


def test_dataloaders_command_rejects_an_unknown_dataset_in_one_line(capsys):
    assert main(["dataloaders", "--dataset", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown dataset 'nosuch'" in err
