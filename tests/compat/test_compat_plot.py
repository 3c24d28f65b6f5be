"""Plot and help fixes found while running the original README: the parent picked by experiment,
a --kind that contradicts the results, and the CI in `compare --help`."""

from __future__ import annotations

import json

import pytest

from compat_helpers import Shell

# End-to-end (make test-all): the original suite's plot commands over sweeps trained for the module.
pytestmark = pytest.mark.e2e


def test_plot_by_experiment_skips_a_newer_failed_parent_and_says_which_it_picked(sh: Shell, compared, tracking,
                                                                                 tmp_path):
    from mlproject.schema import RunRole, SweepKind, Tag
    from mlproject.tracking import client

    finished = json.loads(compared.line("MLPROJECT_RESULT"))["run_id"]
    newer = client.open_parent(experiment="gpt2_vs_gpt3_small_fair", run_name="crashed", role=RunRole.SWEEP_PARENT,
                               match={Tag.SWEEP_KEY: "other"}, resume=False, tags={Tag.SWEEP_KIND: SweepKind.COMPARE})
    client.set_status(newer.run_id, "FAILED")  # a newer parent that never got a finished child
    ran = sh.run(f"mlproject plot --experiment-name gpt2_vs_gpt3_small_fair --output-dir {tmp_path} "
                 "--log-to-run false")
    assert f"parent run {finished} " in ran.line("plot: experiment 'gpt2_vs_gpt3_small_fair':")
    assert json.loads(ran.line("MLPROJECT_RESULT"))["run_id"] == finished


def test_plot_kind_that_contradicts_the_results_is_refused(sh: Shell, compared, tmp_path):
    ran = sh.run("mlproject plot --results research_runs/compare/gpt2_vs_gpt3_small_fair/results.jsonl "
                 f"--kind ablation --output-dir {tmp_path}", check=False)
    assert ran.returncode == 2
    (line,) = ran.output.strip().splitlines()
    assert "kind=ablation" in line and "holds compare results" in line
    assert not list(tmp_path.iterdir())


def test_compare_help_shows_the_confidence_interval_once_escaped(sh: Shell):
    ran = sh.run("mlproject compare --help")
    assert "95% CI" in " ".join(ran.output.split()) and "%%" not in ran.output
