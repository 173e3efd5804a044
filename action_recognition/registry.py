"""The MLflow model registry: register a run's model as ``challenger``; promote it to ``champion`` when it
wins.

- :func:`register_run`: one version per run (registering the same run twice returns the existing version),
  tagged with its metrics and test-set identity, alias ``challenger``.
- :func:`promote`: moves ``champion`` to the challenger only when it beats the champion on the same test set
  by ``registry.promotion_margin``, with an audit tag (who, when, metrics). Idempotent: promoting the champion
  again changes nothing. Aliases move atomically in MLflow, so readers see the old or the new champion, never
  neither.

Every MLflow call is retried with backoff on connection errors (server restarts), so a blip does not fail a
task.
"""

from __future__ import annotations

import functools
import getpass
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from action_recognition.config import RegistryConfig
from action_recognition.errors import ActionRecognitionError

log = logging.getLogger(__name__)
T = TypeVar("T")

CHAMPION = "champion"
CHALLENGER = "challenger"
#: The decision of a promote that repeats an earlier one (a re-run): nothing moves, nothing is re-reported.
ALREADY_CHAMPION = "the challenger already is the champion"


class RegistryError(ActionRecognitionError):
    """The registry refused or could not be reached within the retry budget."""


def with_retries(call: Callable[[], T], what: str, config: RegistryConfig) -> T:
    """Run an MLflow call, retrying connection failures and 5xx answers with exponential backoff."""
    from mlflow.exceptions import MlflowException
    from requests.exceptions import ConnectionError as RequestsConnectionError
    from requests.exceptions import Timeout

    for attempt in range(1, config.max_attempts + 1):
        try:
            return call()
        except (RequestsConnectionError, Timeout, MlflowException) as exc:
            transient = not isinstance(exc, MlflowException) or exc.get_http_status_code() >= 500
            if not transient or attempt == config.max_attempts:
                raise RegistryError(f"{what}: {exc}") from exc
            delay = config.backoff_s * 2 ** (attempt - 1)
            log.warning(
                "%s failed (attempt %d/%d, retrying in %.1f s): %s",
                what,
                attempt,
                config.max_attempts,
                delay,
                str(exc)[:200],
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def set_alias(client: Any, name: str, alias: str, version: str, config: RegistryConfig) -> None:
    """Point ``alias`` at ``version``, idempotently: two tasks setting the same alias at once can collide in
    the tracking store (a unique-constraint error); what counts is where the alias points afterwards."""
    from mlflow.exceptions import MlflowException

    for attempt in range(1, config.max_attempts + 1):
        try:
            with_retries(
                lambda: client.set_registered_model_alias(name, alias, version), f"alias {alias}", config
            )
            return
        except RegistryError:
            try:
                now = str(client.get_model_version_by_alias(name, alias).version)
            except MlflowException:  # the alias may not exist yet: try again
                now = None
            if now == version:
                return
            if attempt == config.max_attempts:
                raise
            time.sleep(config.backoff_s * attempt)


@dataclass
class Registration:
    """A registered version; ``summary()`` is the CLI's JSON line."""

    name: str
    version: str
    run_id: str
    model_uri: str
    created: bool
    aliases: list[str]
    video: str | None = (
        None  # models:/<dataset>-video/N registered beside it (action_recognition.video_model)
    )

    def summary(self) -> dict[str, object]:
        out = asdict(self)
        out["registry_uri"] = f"models:/{self.name}/{self.version}"
        return out


def _client(tracking_uri: str | None) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri) if tracking_uri else MlflowClient()


def register_run(
    run_id: str,
    name: str,
    config: RegistryConfig,
    *,
    tracking_uri: str | None = None,
    model_uri: str | None = None,
) -> Registration:
    """Register the model of ``run_id`` under ``name`` (once) and point ``challenger`` at it."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    run = with_retries(lambda: client.get_run(run_id), f"read run {run_id}", config)
    source = model_uri or run.data.tags.get("ar.model_uri")
    if not source:
        raise RegistryError(
            f"run {run_id} logged no model (tag ar.model_uri is missing); train with log_model on"
        )
    existing = with_retries(
        lambda: client.search_model_versions(f"name='{name}' and run_id='{run_id}'"), f"search {name}", config
    )
    created = False
    if existing:
        version = sorted(existing, key=lambda v: int(v.version))[0]
    else:
        try:
            with_retries(
                lambda: client.create_registered_model(name, description=_describe(name)), "create", config
            )
        except RegistryError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, MlflowException) and cause.error_code == "RESOURCE_ALREADY_EXISTS"):
                raise
        metrics = {k: v for k, v in run.data.metrics.items() if not k.startswith(("epoch_", "system/"))}
        tags = {
            "ar.test_set_sha256": run.data.tags.get("ar.test_set_sha256", ""),
            "ar.arch": run.data.tags.get("ar.arch", ""),
            "ar.untrained": run.data.tags.get("ar.untrained", "false"),
            "ar.metrics": json.dumps(metrics, sort_keys=True),
        }
        model_id = None
        artifact_source = source
        if source.startswith("models:/m-"):  # an MLflow 3 logged model: register its artifacts, linked by id
            model_id = source[len("models:/") :]
            logged = with_retries(lambda: client.get_logged_model(model_id), f"read {source}", config)
            artifact_source = logged.artifact_location
        version = with_retries(
            lambda: client.create_model_version(
                name, artifact_source, run_id=run_id, tags=tags, model_id=model_id
            ),
            f"register {name}",
            config,
        )
        created = True
        try:
            version = _wait_ready(client, name, version.version, config)
        except (
            RegistryError
        ) as exc:  # a concurrent registration of this run already removed it as a duplicate
            cause = exc.__cause__
            if not (isinstance(cause, MlflowException) and cause.error_code == "RESOURCE_DOES_NOT_EXIST"):
                raise
        version, created = _converge(client, name, run_id, version, config)
    set_alias(client, name, CHALLENGER, str(version.version), config)
    aliases = with_retries(
        lambda: client.get_model_version(name, version.version), "read version", config
    ).aliases
    log.info(
        "%s version %s of run %s (%s); aliases %s",
        "registered" if created else "found",
        version.version,
        run_id,
        source,
        aliases,
    )
    return Registration(name, str(version.version), run_id, source, created, sorted(aliases))


def _converge(client: Any, name: str, run_id: str, mine: Any, config: RegistryConfig) -> tuple[Any, bool]:
    """Two registrations of one run at the same time may both create a version, and a retried create whose
    first attempt did land creates one more: the oldest version of the run stays, and every racer deletes all
    the others (whoever made them), so the registry ends as after one registration."""
    from mlflow.exceptions import MlflowException

    versions = with_retries(
        lambda: client.search_model_versions(f"name='{name}' and run_id='{run_id}'"), f"search {name}", config
    )
    oldest = min(versions, key=lambda v: int(v.version))
    for extra in (v for v in versions if v.version != oldest.version):
        log.warning(
            "run %s has a duplicate %s version %s (keeping %s): removing it",
            run_id,
            name,
            extra.version,
            oldest.version,
        )
        try:
            number = str(extra.version)
            delete = functools.partial(client.delete_model_version, name, number)
            with_retries(delete, "delete duplicate", config)
        except RegistryError as exc:  # another racer removed it first
            cause = exc.__cause__
            if not (isinstance(cause, MlflowException) and cause.error_code == "RESOURCE_DOES_NOT_EXIST"):
                raise
    return (mine, True) if oldest.version == mine.version else (oldest, False)


def _describe(name: str) -> str:
    return (
        f"Action recognition models ({name}). Aliases: @champion serves, @challenger is the latest "
        "candidate. "
        "Versions carry their test metrics (tag ar.metrics) and test-set identity (ar.test_set_sha256)."
    )


def _wait_ready(client: Any, name: str, version: str, config: RegistryConfig, timeout_s: float = 120) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        mv = with_retries(lambda: client.get_model_version(name, version), "read version", config)
        if mv.status == "READY":
            return mv
        if mv.status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            raise RegistryError(f"{name} version {version} is {mv.status}: {mv.status_message}")
        time.sleep(0.5)


@dataclass
class Promotion:
    """The outcome of a promotion decision."""

    name: str
    promoted: bool
    reason: str
    challenger_version: str
    champion_version: str | None
    metric: str
    challenger_score: float | None
    champion_score: float | None
    video_champion: str | None = None  # models:/<dataset>-video/N, moved with the champion it wraps
    #: Where the two were compared: "the same test set", or the challenger's when the champion was
    #: re-evaluated on it (a dataset with new clips has a new test set).
    compared_on: str = ""
    #: The champion's per-class accuracy on the challenger's test set, when it was re-evaluated there.
    champion_per_class: dict[str, float] | None = None
    #: What the promote step's retrain report says in short (the whole report is in the challenger's run).
    report: dict[str, Any] | None = None

    def summary(self) -> dict[str, object]:
        return asdict(self)


def _against_champion(
    client: Any,
    name: str,
    champion: Any,
    challenger: Any,
    result: Promotion,
    reevaluate: Reevaluate | None,
    config: RegistryConfig,
) -> str:
    """Why the challenger does not replace the champion ("" when it does): both scored on the challenger's
    test set first (the champion re-evaluated there when the test sets differ), so that the report compares
    them even when an untrained challenger is kept out."""
    metric = result.metric
    same_test = challenger.tags.get("ar.test_set_sha256") == champion.tags.get("ar.test_set_sha256")
    result.compared_on = "the same test set" if same_test else ""
    if not same_test and reevaluate is None:
        return (
            "different test sets: evaluate the champion on the challenger's test set "
            "(action-recognition evaluate) before comparing"
        )
    if (
        not same_test
        and _reevaluated(client, name, champion, challenger, metric, result, reevaluate, config) is None
    ):
        return result.reason
    if challenger.tags.get("ar.untrained") == "true":
        return "the challenger has an untrained backbone; it never replaces a champion"
    new, old = result.challenger_score, result.champion_score
    if new is not None and old is not None and new < old + config.promotion_margin:
        return f"{metric} {new:.4f} does not beat the champion's {old:.4f} by {config.promotion_margin}"
    return ""


def _reevaluated(
    client: Any,
    name: str,
    champion: Any,
    challenger: Any,
    metric: str,
    result: Promotion,
    reevaluate: Reevaluate | None,
    config: RegistryConfig,
) -> float | None:
    """The champion's ``metric`` on the challenger's test set (its run's dataset file), recorded in
    ``result``; None (and the reason in ``result``) when the champion cannot score that set (other
    classes)."""
    from action_recognition.datasets import DatasetError

    assert reevaluate is not None
    run = with_retries(lambda: client.get_run(challenger.run_id), f"read run {challenger.run_id}", config)
    dataset_uri = run.data.params.get("dataset_uri", "")
    if not dataset_uri:
        raise RegistryError(f"{name} version {challenger.version}: its run logged no dataset_uri param")
    try:
        metrics = reevaluate(f"models:/{name}/{champion.version}", dataset_uri)
    except DatasetError as exc:
        result.reason = f"the champion cannot be scored on the challenger's test set: {exc}"
        return None
    score = float(metrics.scalars()[metric])
    result.champion_score = score
    result.champion_per_class = dict(metrics.per_class_acc)
    result.compared_on = f"the challenger's test set ({dataset_uri}; the champion re-evaluated)"
    log.info("%s: champion v%s scores %s %.4f on %s", name, champion.version, metric, score, dataset_uri)
    return score


def _score(version: Any, metric: str) -> float | None:
    metrics = json.loads(version.tags.get("ar.metrics", "{}") or "{}")
    value = metrics.get(metric)
    return float(value) if value is not None else None


#: Scores a model (``models:/name/N``) on a dataset file's test split: the champion re-evaluated on the
#: challenger's test set (:func:`action_recognition.evaluate.evaluate_model` in the promote step).
Reevaluate = Callable[[str, str], Any]


def promote(
    name: str,
    config: RegistryConfig,
    *,
    tracking_uri: str | None = None,
    actor: str | None = None,
    reevaluate: Reevaluate | None = None,
) -> Promotion:
    """Move ``champion`` to ``challenger`` when it wins by the margin on the same test set (see module
    docstring). When their test sets differ (new clips were added) and ``reevaluate`` is given, the champion
    is scored on the challenger's test set first, and the two compare there."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    metric = config.promotion_metric

    def alias(which: str) -> Any | None:
        try:
            return client.get_model_version_by_alias(name, which)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                return None
            raise

    challenger = with_retries(lambda: alias(CHALLENGER), f"read {name}@{CHALLENGER}", config)
    if challenger is None:
        raise RegistryError(f"{name} has no @{CHALLENGER}; register a run first")
    champion = with_retries(lambda: alias(CHAMPION), f"read {name}@{CHAMPION}", config)
    new_score = _score(challenger, metric)
    if new_score is None:
        raise RegistryError(f"{name} version {challenger.version} has no {metric} in its ar.metrics tag")
    old_score = _score(champion, metric) if champion is not None else None
    result = Promotion(
        name,
        False,
        "",
        str(challenger.version),
        str(champion.version) if champion else None,
        metric,
        new_score,
        old_score,
    )
    if champion is not None and champion.version == challenger.version:
        result.reason = ALREADY_CHAMPION
        return result
    if champion is not None:
        refused = _against_champion(client, name, champion, challenger, result, reevaluate, config)
        if refused:
            result.reason = refused
            return result
    old_score = result.champion_score
    who = actor or os.environ.get("AIRFLOW_CTX_DAG_RUN_ID") or getpass.getuser()
    audit = {
        "by": who,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "metric": metric,
        "score": new_score,
        "previous_champion": result.champion_version,
        "previous_score": old_score,
        "margin": config.promotion_margin,
    }
    set_alias(client, name, CHAMPION, str(challenger.version), config)
    with_retries(
        lambda: client.set_model_version_tag(name, challenger.version, "ar.promotion", json.dumps(audit)),
        "audit tag",
        config,
    )
    result.promoted = True
    result.reason = "no champion yet" if champion is None else f"{metric} {new_score:.4f} beats {old_score}"
    log.info("promoted %s version %s to @%s: %s", name, challenger.version, CHAMPION, result.reason)
    return result
