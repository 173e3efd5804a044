"""Retraining that repeats what won: the champion's training recipe, read back from its MLflow run.

A train step logs its whole resolved ``train`` section as the run's ``train_config.json`` artifact (and as
params). With ``train.recipe_source=champion`` (the Param ``recipe``; the retrain DAG's default) the next
training of the same registered model takes every recipe setting from the current champion's run, except the
keys named in ``train.recipe_overrides`` (those given at trigger time: ``check_params`` fills it from the
run's conf), and records where each key came from. Settings that say where or how a run executes, not what
it learns (the tracking URI, threads, checkpoint cadence, a weights path, the untrained-RGB safety flag), stay
the deployment's. The champion's recipe goes back through the one validated config: a recipe that no longer
validates (a removed architecture, an out-of-range value) is a
:class:`~action_recognition.errors.ConfigError` naming the run, which no retry fixes. No champion yet: the
deployment's settings, said so.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import ValidationError

from action_recognition.config import TrainConfig
from action_recognition.errors import ConfigError

log = logging.getLogger(__name__)

#: The artifact that holds a run's resolved ``train`` section (and its ``arch``).
TRAIN_CONFIG_ARTIFACT = "train_config.json"
#: Where each recipe key of a run came from.
RECIPE_SOURCES_ARTIFACT = "recipe_sources.json"
#: Clips per split and class of a run's dataset (what a retrain report compares).
CLASS_COUNTS_ARTIFACT = "class_counts.json"
#: Settings that are the deployment's, never a champion's: where and how a run executes, and safety flags.
NOT_RECIPE = frozenset(
    {
        "arch",  # the champion's architecture arrives as its family's arch field
        "keypoint_arch",
        "rgb_arch",
        "tracking_uri",  # a train key before the tracking section: older champions' train_config.json hold it
        "experiment",
        "registered_model",
        "resume",
        "log_model",
        "system_metrics",
        "device",
        "threads",
        "num_workers",
        "max_minutes",
        "checkpoint_interval_s",
        "backbone_weights",
        "allow_untrained",
        "recipe_source",
        "recipe_overrides",
    }
)


@dataclass
class ChampionRecipe:
    """The training settings of a registered model's ``@champion``."""

    name: str
    version: str
    run_id: str
    arch: str
    train: dict[str, Any]


@dataclass
class RecipeChoice:
    """The config a training runs with and where each recipe key came from (``champion <run id>``,
    ``trigger``, ``default``)."""

    config: TrainConfig
    source: str  # "champion", "form", or "default (no champion)"
    champion_run: str = ""
    sources: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "champion_run": self.champion_run, "keys": self.sources}


def family_arch_field(family: str) -> str:
    return "keypoint_arch" if family == "keypoint" else "rgb_arch"


def champion_recipe(client: Any, name: str) -> ChampionRecipe | None:
    """``name@champion``'s recipe from its run: the ``train_config.json`` artifact, or (a run logged before
    the artifact existed) its ``train.*`` params. None when ``name`` has no champion."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, "champion")
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise
    run = client.get_run(version.run_id)
    logged = run_artifact(client, version.run_id, TRAIN_CONFIG_ARTIFACT)
    if logged is not None:
        train, arch = dict(logged["train"]), str(logged["arch"])
    else:
        train = {
            k.removeprefix("train."): _param_value(v)
            for k, v in run.data.params.items()
            if k.startswith("train.")
        }
        arch = run.data.params.get("arch") or run.data.tags.get("ar.arch", "")
    return ChampionRecipe(name, str(version.version), version.run_id, arch, train)


def choose_recipe(config: TrainConfig, champion: ChampionRecipe | None, family: str) -> RecipeChoice:
    """``config`` with the champion's recipe in every key the trigger did not give (see the module
    docstring).

    Raises:
        ConfigError: the champion's recipe does not validate any more; names the run and the bad value.
    """
    given = set(config.recipe_overrides)
    arch_field = family_arch_field(family)
    keys = [k for k in TrainConfig.model_fields if k not in NOT_RECIPE] + [arch_field]
    if config.recipe_source != "champion":
        return RecipeChoice(config, "form", sources=dict.fromkeys(keys, "form"))
    if champion is None:
        sources = {k: "trigger" if k in given else "default" for k in keys}
        return RecipeChoice(config, "default (no champion)", sources=sources)
    update: dict[str, Any] = {}
    sources = {}
    for key in keys:
        theirs = champion.arch if key == arch_field else champion.train.get(key)
        if key in given or (key == arch_field and config.arch):
            sources[key] = "trigger"
        elif key in champion.train or key == arch_field:
            update[key], sources[key] = theirs, f"champion {champion.run_id}"
        else:  # a setting newer than the champion's run: the deployment's
            sources[key] = "default"
    merged = {**config.model_dump(mode="json"), **update}
    try:
        resolved = TrainConfig.model_validate(merged)
    except ValidationError as exc:
        bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(
            f"the recipe of {champion.name}@champion (version {champion.version}, run {champion.run_id}) "
            f"no longer validates: {bad}. Train with recipe=form (the Param) or promote a model "
            "trained with valid settings"
        ) from None
    return RecipeChoice(resolved, "champion", champion.run_id, sources)


def resolve_recipe(
    config: TrainConfig, registered: str, family: str, tracking_uri: str | None = None
) -> RecipeChoice:
    """The settings a training of ``registered`` (a ``family`` model) uses: ``config``'s, or with
    ``recipe_source=champion`` its champion's recipe read from the MLflow server at ``tracking_uri``."""
    if config.recipe_source != "champion":
        return choose_recipe(config, None, family)
    from mlflow import MlflowClient

    choice = choose_recipe(config, champion_recipe(MlflowClient(tracking_uri), registered), family)
    log.info(
        "recipe from %s%s", choice.source, f" (run {choice.champion_run})" if choice.champion_run else ""
    )
    return choice


def _param_value(text: str) -> Any:
    """An MLflow param (always a string) back to its JSON value where it is one."""
    try:
        return json.loads(text)
    except ValueError:
        return None if text == "None" else text


def run_artifact(client: Any, run_id: str, path: str, *, parse: bool = True) -> Any | None:
    """A run's artifact as JSON (``parse``) or text; None when the run has no such artifact.

    Its folder is listed first and only an artifact that is there is downloaded: behind the MLflow server's
    artifact proxy on S3 (the compose stack), downloading a missing one is answered with an error the client
    retries with backoff for about four minutes (every first promotion waited that long for its retrain
    report's absence)."""
    from mlflow.exceptions import MlflowException

    folder = str(PurePosixPath(path).parent)
    with tempfile.TemporaryDirectory(prefix="ar-artifact-") as tmp:
        try:
            listed = {a.path for a in client.list_artifacts(run_id, None if folder == "." else folder)}
            if path not in listed:
                return None
            local = Path(client.download_artifacts(run_id, path, tmp))
        except (MlflowException, OSError):
            return None
        text = local.read_text()
    return json.loads(text) if parse else text
