"""Kinetics-style action recognition as an orchestrated workflow.

Importing the package does nothing beyond defining names: no folders, no logging set-up, no MLflow URI.
The steps live in their own modules (``kinetics``, ``storage``, ...) and the CLI in ``cli``.
"""

from __future__ import annotations

__version__ = "0.1.0"
