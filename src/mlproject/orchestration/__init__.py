"""Pipelines of steps: the YAML schema, the step graph, and the runners (local, Airflow)."""
