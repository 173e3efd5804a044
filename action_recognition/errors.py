"""Exceptions raised by the steps. Each carries the context a user needs to act: which key, URI or row."""

from __future__ import annotations


class ActionRecognitionError(Exception):
    """Base class: a failure the CLI reports as a one-line error with exit status 2."""


class ConfigError(ActionRecognitionError, ValueError):
    """The configuration (YAML, environment, ``--set`` or Airflow Params) is invalid."""


class StorageError(ActionRecognitionError, OSError):
    """A storage operation failed; the message names the URI."""


class AnnotationError(ActionRecognitionError):
    """An annotation source cannot be read at all (missing file, unreachable URL, unsupported scheme)."""


class PlanError(ActionRecognitionError):
    """The plan cannot be made as configured (unknown class, no rows selected, mixed Kinetics versions)."""


class WorkspaceFullError(ActionRecognitionError):
    """The local work folder ran out of space: the step stops (nothing partial is published); free space, rerun."""
