"""``python -m action_recognition``: the same CLI as the ``action-recognition`` console script.

Containers that mount a venv built elsewhere cannot use its console scripts (they point at the host's
interpreter), so they run this module instead.
"""

from __future__ import annotations

from action_recognition.cli import main

if __name__ == "__main__":
    main()
