"""Training profiles: named sets of ``train`` settings that are not the product's defaults.

The short profile is one model (the early-stop recipe: no refit seeds) for a few epochs. It is for what needs
a trained model but not the recipe's accuracy: the test suite and `make demo`, which say so. The product's
defaults (:class:`action_recognition.config.TrainConfig`) keep the full recipe.
"""

from __future__ import annotations

from typing import Any

from action_recognition.config import ENV_PREFIX

#: The short profile, as ``train`` keys and values.
SHORT_TRAINING: dict[str, Any] = {"recipe": "early_stop", "epochs": 3}


def short_training_env() -> dict[str, str]:
    """:data:`SHORT_TRAINING` as ``AR__TRAIN__*`` variables, for a process (Airflow, a step) started with
    them; a DAG run still sets ``epochs`` through its Param."""
    return {f"{ENV_PREFIX}TRAIN__{key.upper()}": str(value) for key, value in SHORT_TRAINING.items()}
