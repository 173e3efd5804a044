"""Exceptions raised by the steps. Each carries the context a user needs to act: which key, URI or row."""

from __future__ import annotations


class ActionRecognitionError(Exception):
    """Base class: a failure the CLI reports as a one-line error with exit status 2.

    ``retryable`` says whether running the same step again can change the outcome: a service or network error
    can (the orchestrator retries it with backoff), a bad configuration or bad input cannot (the task fails at
    once).
    """

    retryable: bool = True


class ConfigError(ActionRecognitionError, ValueError):
    """The configuration (YAML, environment, ``--set`` or Airflow Params) is invalid."""

    retryable = False


class StorageError(ActionRecognitionError, OSError):
    """A storage operation failed; the message names the URI."""


class AnnotationError(ActionRecognitionError):
    """An annotation source cannot be read at all (missing file, unreachable URL, unsupported scheme)."""


class PlanError(ActionRecognitionError):
    """The plan cannot be made as configured (unknown class, no rows selected, mixed Kinetics versions)."""

    retryable = False


class WorkspaceFullError(ActionRecognitionError):
    """The local work folder ran out of space: the step stops (nothing partial is published); free space,
    rerun."""


class TrainError(ActionRecognitionError):
    """Training cannot start or continue as configured."""
