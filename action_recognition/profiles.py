"""Training profiles: named sets of ``train`` (and ``review``) settings that are not the product's defaults.

The short profile is one model (the early-stop recipe: no refit seeds) for a few epochs, and a review of its
dataset by 2 fold models instead of 5. It is for what needs a trained model but not the recipe's accuracy nor
the review's precision: the test suite and `make demo`, which say so. The product's defaults
(:class:`action_recognition.config.TrainConfig`, :class:`~action_recognition.config.ReviewConfig`) keep the
full recipe and the 5-fold review.
"""

from __future__ import annotations

from typing import Any

from action_recognition.config import ENV_PREFIX

#: The short profile, as ``train`` keys and values.
SHORT_TRAINING: dict[str, Any] = {"recipe": "early_stop", "epochs": 3}
#: The short profile's ``review`` keys and values: its fold models train the recipe's epochs (few) anyway.
SHORT_REVIEW: dict[str, Any] = {"folds": 2}


def short_training_env() -> dict[str, str]:
    """:data:`SHORT_TRAINING` and :data:`SHORT_REVIEW` as ``AR__TRAIN__*`` and ``AR__REVIEW__*`` variables,
    for a process (Airflow, a step) started with them; a DAG run still sets ``epochs`` through its Param."""
    sections = {"TRAIN": SHORT_TRAINING, "REVIEW": SHORT_REVIEW}
    return {
        f"{ENV_PREFIX}{section}__{key.upper()}": str(value)
        for section, values in sections.items()
        for key, value in values.items()
    }
