"""Registers the action-recognition operator links with Airflow (the UI needs plugins for extra links)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from ar_provider.links import MLflowRunLink, StoragePrefixLink


class ActionRecognitionPlugin(AirflowPlugin):
    name = "action_recognition"
    operator_extra_links = [MLflowRunLink(), StoragePrefixLink()]  # noqa: RUF012 - AirflowPlugin's own attribute
