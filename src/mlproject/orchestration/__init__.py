"""Pipelines of steps, above research: the YAML schema and options (config), loading and the
step graph (graph), a step's command and environment shared by both runners (steps), the local
runner (runner), and where the MLflow project is (project). The Airflow DAG is airflow/dags/."""
