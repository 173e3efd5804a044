"""What every command shares: the app, the options, how a step is run and how it fails."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from action_recognition.errors import ActionRecognitionError

app = typer.Typer(
    name="action-recognition",
    help="Kinetics-style action recognition: plan, download, clip, pose, train, register.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="YAML config file (sections as top-level keys).")
]

SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override one config value: section.key=value (repeatable).")
]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON summary as the last line of stdout.")]

StorageOpt = Annotated[
    str | None, typer.Option("--storage", help="Storage root: a local folder or s3://bucket/prefix.")
]

LogOpt = Annotated[str, typer.Option("--log-level", help="Logging level for stderr.")]

T = TypeVar("T")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_step(
    step: Callable[[], T],
    *,
    as_json: bool,
    summarise: Callable[[T], dict[str, Any]],
    human: Callable[[T], str],
) -> None:
    """Run a step; print its human summary or its JSON line; turn known errors into exit status 2."""
    try:
        result = step()
    except ActionRecognitionError as exc:
        fail(exc, as_json)
    if as_json:
        typer.echo(json.dumps({"ok": True, **summarise(result)}, default=str, sort_keys=True))
    else:
        typer.echo(human(result))


def fail(exc: ActionRecognitionError, as_json: bool) -> NoReturn:
    """A known error: one line on stderr, the JSON failure summary with --json, exit status 2."""
    typer.echo(f"error: {exc}", err=True)
    if as_json:
        typer.echo(
            json.dumps(
                {"ok": False, "error": str(exc), "error_type": type(exc).__name__, "retryable": exc.retryable}
            )
        )
    raise typer.Exit(2) from None


def load_config_from(path: Path | None, pairs: list[str] | None, extra: dict[str, Any] | None = None) -> Any:
    """The one validated config from ``--config``, the environment, ``--set`` and the command's own flags."""
    from action_recognition.config import load_config

    return load_config(path, overrides=pairs or (), extra=extra)


def nested(**flat: Any) -> dict[str, Any]:
    """``{"plan.per_class": 5, "plan.seed": None}`` -> ``{"plan": {"per_class": 5}}`` (None = not given)."""
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        if value is None:
            continue
        section, key = dotted.split("__", 1)
        tree.setdefault(section, {})[key] = value
    return tree


DatasetOpt = Annotated[str | None, typer.Option("--dataset", help="Dataset name (as planned).")]

ShardOpt = Annotated[str, typer.Option("--shard", help="I/N: this process handles shard I of N (from 0).")]


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="clip", file=sys.stderr, disable=not enabled, dynamic_ncols=True)


def shard_size(cfg: Any, dataset: str, shard: tuple[int, int]) -> int:
    from action_recognition.ledger import shard_rows
    from action_recognition.manifest import read_manifest
    from action_recognition.storage import open_storage

    return len(shard_rows(read_manifest(open_storage(cfg.storage), dataset), shard))


TrackingOpt = Annotated[
    str | None,
    typer.Option("--tracking-uri", help="MLflow tracking URI (tracking.uri; default MLFLOW_TRACKING_URI)."),
]


@dataclass(frozen=True)
class Common:
    """What every step command shares, given once: ``--storage``, ``--config``, ``--set``, ``--json`` (and
    ``--log-level``, applied before the command runs). :func:`step_command` adds these options to a
    command."""

    storage: str | None = None
    config: Path | None = None
    pairs: list[str] | None = None
    as_json: bool = False

    def load(self, extra: dict[str, Any] | None = None) -> Any:
        """The one validated config: ``--config``, the environment, ``--set``, ``--storage`` and ``extra``
        (the command's own flags, :func:`nested`)."""
        tree = dict(extra or {})
        if self.storage is not None:
            tree["storage"] = {**tree.get("storage", {}), "uri": self.storage}
        return load_config_from(self.config, self.pairs, tree)

    def run(
        self, step: Callable[[], T], *, summarise: Callable[[T], dict[str, Any]], human: Callable[[T], str]
    ) -> None:
        run_step(step, as_json=self.as_json, summarise=summarise, human=human)


def _option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def step_command(
    name: str | None = None,
    *,
    log_level: str = "INFO",
    storage: bool = True,
    config: bool = True,
    group: Any = None,
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a command (on ``app``, or ``group``) whose first parameter is a :class:`Common`: the shared
    options are added to its signature here, once, instead of in every command."""

    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        own = list(inspect.signature(fn, eval_str=True).parameters.values())[1:]
        shared = [_option("storage", StorageOpt, None)] if storage else []
        if config:
            shared += [_option("config", ConfigOpt, None), _option("set_", SetOpt, None)]
        shared += [_option("as_json", JsonOpt, False), _option("log_level", LogOpt, log_level)]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> None:
            setup_logging(kwargs.pop("log_level"))
            common = Common(
                storage=kwargs.pop("storage", None),
                config=kwargs.pop("config", None),
                pairs=kwargs.pop("set_", None),
                as_json=kwargs.pop("as_json"),
            )
            fn(common, **kwargs)

        params = [*own, *shared]
        signature = inspect.Signature(params, return_annotation=None)
        command.__signature__ = signature  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
        (group or app).command(name)(command)
        return command

    return decorate
