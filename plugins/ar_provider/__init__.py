"""Airflow operators and links for action-recognition, written in provider style.

``StepOperator`` runs one ``action-recognition`` sub-command, locally as a subprocess or in the worker image
through DockerOperator; ``MLflowRunLink`` and ``StoragePrefixLink`` link a task to its MLflow run and its
storage prefix.
"""
