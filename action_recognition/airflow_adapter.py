"""The one place where Airflow meets the library: DAG Params -> config, connections -> environment.

Nothing else in the package imports Airflow, and this module imports it only inside the function that
reads a connection, so the worker image and the CLI never need it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from action_recognition.config import Config, load_config
from action_recognition.names import class_selector

#: Trigger-form Param name -> the config key(s) it sets. The DAG declares the Params; this says what each one
#: sets, and steps receive exactly these (validated once, by check_params), never the Params themselves.
PARAM_KEYS: dict[str, str | tuple[str, ...]] = {
    "annotations": "plan.annotations",
    "classes": "plan.classes",
    "class_contains": "plan.class_contains",
    "per_class": "plan.per_class",
    "seed": ("plan.seed", "train.seed"),
    "dataset": "plan.dataset",
    "storage_uri": "storage.uri",
    "url_template": "download.url_template",
    "pose_weights": "pose.weights",
    "pose_untrained": "pose.untrained",
    "epochs": "train.epochs",
    "keypoint_arch": "train.keypoint_arch",
    "rgb_arch": "train.rgb_arch",
    "rgb_allow_untrained": "train.allow_untrained",
    "recipe": "train.recipe_source",
    "promotion_margin": "registry.promotion_margin",
}
#: Params whose empty value means "the config's default".
EMPTY_IS_DEFAULT = {"pose_weights", "url_template"}
#: What a Param's schema takes from its config field: the rest (title, default) is the DAG's.
SCHEMA_KEYS = (
    "type",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "enum",
    "maxItems",
    "items",
    "description",
)


def field_schema(key: str) -> dict[str, Any]:
    """The JSON schema of config field ``section.key`` (pydantic's own), with a nullable field's two branches
    folded into one ``type`` list, and only the keys a Param's schema uses (:data:`SCHEMA_KEYS`)."""
    section, name = key.split(".", 1)
    model = Config.model_fields[section].annotation
    assert model is not None and hasattr(model, "model_json_schema"), key
    schema = dict(model.model_json_schema()["properties"][name])
    branches = schema.pop("anyOf", None)
    if branches:
        kinds = [b for b in branches if b.get("type") != "null"]
        nullable = len(kinds) < len(branches)
        if len(kinds) == 1:
            schema = {**kinds[0], **schema}
            if nullable:
                schema["type"] = ["null", schema["type"]]
    return {k: v for k, v in schema.items() if k in SCHEMA_KEYS}


def param_schema(name: str, **dag_only: Any) -> dict[str, Any]:
    """``Param`` keyword arguments for trigger-form Param ``name`` from the config field it sets (type,
    bounds, length, pattern, enum, description): one home for each rule. ``dag_only``: what only the form
    needs (a nullable type so an empty field can be submitted, ``minItems``); a rule the field already states
    cannot be given again here."""
    keys = PARAM_KEYS[name]
    schema = field_schema(keys if isinstance(keys, str) else keys[0])
    clash = sorted(k for k in dag_only if k in schema and k not in ("type", "description"))
    if clash:
        raise ValueError(f"Param {name!r}: {clash} are the config field's to say; change them in config.py")
    return {**schema, **dag_only}


def overrides_from_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Nested config overrides from DAG Params; Params not in :data:`PARAM_KEYS` are the DAG's own.

    Empty values ("" or []) mean "not set" for the class selector, so the form can offer all three:
    a non-empty ``classes`` list wins over ``class_contains``.
    """
    tree: dict[str, Any] = {}
    for name, keys in PARAM_KEYS.items():
        if name not in params:
            continue
        value = params[name]
        if name in EMPTY_IS_DEFAULT and value in ("", None):
            continue
        for key in (keys,) if isinstance(keys, str) else keys:
            section, field = key.split(".", 1)
            tree.setdefault(section, {})[field] = value
    plan = tree.get("plan", {})
    if "classes" in plan or "class_contains" in plan:
        names = [str(c) for c in plan.get("classes") or []]
        contains = plan.get("class_contains") or None
        everything = not any(n.strip() for n in names) and contains is None  # the form's empty selectors: all
        plan.update(class_selector(names, contains, everything, names_win=True))
    return tree


def trigger_overrides(conf: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[str]:
    """The ``train`` keys a run's trigger set to something other than the DAG's default: with
    ``recipe=champion`` they keep the trigger's value (``train.recipe_overrides``); every other key takes the
    champion's. The trigger form sends every field, so a field left at its default is no override (to force
    a default value over the champion's, trigger with ``recipe=form``)."""
    fields: set[str] = set()
    for name, value in conf.items():
        if name not in PARAM_KEYS or (name in defaults and defaults[name] == value):
            continue
        keys = PARAM_KEYS[name]
        for key in (keys,) if isinstance(keys, str) else keys:
            section, field = key.split(".", 1)
            if section == "train" and field not in ("recipe_source", "recipe_overrides"):
                fields.add(field)
    return sorted(fields)


def set_pairs(overrides: Mapping[str, Any]) -> list[str]:
    """``{"plan": {"per_class": 5}}`` -> ``["--set", "plan.per_class=5"]``: validated Params handed to a
    step's CLI.

    Values are written as YAML, the syntax ``--set`` reads, so every value comes back as it went in (lists,
    None, floats such as ``1e-05``, strings that look like numbers).
    """
    pairs: list[str] = []
    for section, fields in sorted(overrides.items()):
        for field, value in sorted(fields.items()):
            text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, allow_unicode=True)
            text = text.removesuffix("\n").removesuffix("\n...")
            pairs += ["--set", f"{section}.{field}={text}"]
    return pairs


def config_from_params(params: Mapping[str, Any], *, environ: Mapping[str, str] | None = None) -> Config:
    """Validate DAG Params (over the environment's ``AR__*`` defaults) into the one :class:`Config`.

    Raises:
        ConfigError: naming the Param's config key and the valid range, as for any other source.
    """
    return load_config(environ=environ, extra=overrides_from_params(params))


def storage_env_from_connection(conn_id: str) -> dict[str, str]:
    """Environment variables for boto3 from an Airflow AWS connection (login/password, extra endpoint_url).

    Passed to the step's subprocess or container, so the secret never appears in a command line or config.
    """
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    return storage_env_from_fields(conn.login, conn.password, conn.extra_dejson)


def storage_env_from_fields(
    login: str | None, password: str | None, extra: Mapping[str, Any]
) -> dict[str, str]:
    """The pure half of :func:`storage_env_from_connection`."""
    env: dict[str, str] = {}
    if login:
        env["AWS_ACCESS_KEY_ID"] = login
    if password:
        env["AWS_SECRET_ACCESS_KEY"] = password
    endpoint = extra.get("endpoint_url") or (extra.get("service_config", {}).get("s3", {}) or {}).get(
        "endpoint_url"
    )
    if endpoint:
        env["AWS_ENDPOINT_URL"] = str(endpoint)
    if extra.get("region_name"):
        env["AWS_DEFAULT_REGION"] = str(extra["region_name"])
    return env
