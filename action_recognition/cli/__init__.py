"""``action-recognition``: one sub-command per step, each a thin twin of a typed function.

Every command takes ``--config FILE.yaml``, ``--set section.key=value`` (repeatable) and ``--json``; with
``--json`` the last line of stdout is one JSON object summarising the result, for machines and for
DockerOperator's XCom. Logs go to stderr. Errors the user can fix exit with status 2 and one clear line.
"""

from __future__ import annotations

from action_recognition.cli import acquire, curation, inference, keypoints, models, operations
from action_recognition.cli.common import app

__all__ = ["acquire", "app", "curation", "inference", "keypoints", "main", "models", "operations"]


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
