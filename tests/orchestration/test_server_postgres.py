"""A tiny compare logged through `mlproject server` backed by a real PostgreSQL.

.ci/run starts Debian's PostgreSQL and exports MLPROJECT_TEST_PG_URI
(`eval "$(bash docker/setup_postgres.sh)"`); without a reachable database the test is
skipped, except in CI, where it fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from helpers import write_sweep

pytestmark = pytest.mark.e2e

MODELS, SEEDS = ["gpt2", "gpt3"], [42, 43]


def test_compare_logs_through_a_postgresql_backed_server(tmp_path, start_server, postgres_uri):
    import psycopg
    from mlflow import MlflowClient

    experiment = f"pg-{uuid.uuid4().hex[:8]}"
    config = write_sweep(tmp_path / "compare.yaml", experiment, data={"cache_dir": str(tmp_path / "cache")},
                         extra={"compare": {"models": MODELS, "seeds": SEEDS}})
    with start_server(postgres_uri, tmp_path / "mlartifacts") as server:
        url = server.url
        env = {**os.environ, "MLFLOW_TRACKING_URI": url, "MLPROJECT_CACHE_DIR": str(tmp_path / "cache"),
               "HF_HUB_OFFLINE": "1"}
        env.pop("MLFLOW_RUN_ID", None)
        done = subprocess.run([sys.executable, "-m", "mlproject", "compare", "--config", str(config)],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

        client = MlflowClient(tracking_uri=url)
        exp = client.get_experiment_by_name(experiment)
        runs = client.search_runs([exp.experiment_id])
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert len(children) == len(MODELS) * len(SEEDS)
        assert {c.info.status for c in children} == {"FINISHED"}
        for child in children:
            assert len(client.get_metric_history(child.info.run_id, "train_loss")) >= 2
            assert child.info.artifact_uri.startswith("mlflow-artifacts:")
        checkpoint = client.download_artifacts(children[0].info.run_id, "checkpoints/last.pt", str(tmp_path / "dl"))
        assert Path(checkpoint).stat().st_size > 0
        server_log = server.log.read_text()

    with psycopg.connect(postgres_uri) as conn:  # the runs really are in PostgreSQL
        stored = conn.execute("SELECT count(*) FROM runs WHERE experiment_id = %s",
                              (int(exp.experiment_id),)).fetchone()[0]
    assert stored == 1 + len(MODELS) * len(SEEDS)
    assert "backend store: postgresql://***@127.0.0.1" in server_log
    assert postgres_uri not in server_log
