"""``python -m devtools``: the demo (``make demo``), the smoke run (``make smoke-online``) and the local
"YouTube" (``demo-site``, ``serve-videos``; the compose stack's video server). Developer tools beside
``dags/``: they drive the package and Airflow from outside, and the package never imports them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from action_recognition.cli.common import Common, JsonOpt, LogOpt, run_step, setup_logging, step_command
from action_recognition.errors import ActionRecognitionError, ConfigError

app = typer.Typer(
    name="devtools",
    help="Developer tools: the offline demo, the networked smoke run, the local YouTube.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@step_command(config=False, group=app)
def demo(
    common: Common,
    workdir: Annotated[Path, typer.Option("--workdir", help="Where the demo keeps everything.")] = Path(
        ".demo"
    ),
    videos: Annotated[Path, typer.Option("--videos", help="Folder of the bundled real videos.")] = Path(
        "tests/fixtures/videos"
    ),
    epochs: Annotated[
        int | None,
        typer.Option("--epochs", help="Training epochs of each model (default: the profile's).", min=1),
    ] = None,
    training: Annotated[
        str,
        typer.Option("--training", help="short: one model a family, few epochs; full: the product's recipe."),
    ] = "short",
    per_class: Annotated[int, typer.Option("--per-class", help="Clips planned per class.", min=2)] = 8,
    tracking_uri: Annotated[
        str | None,
        typer.Option("--tracking-uri", help="An MLflow server (default: a SQLite store in WORKDIR)."),
    ] = None,
) -> None:
    """Run the whole kinetics_pipeline DAG offline on the embedded defaults (SQLite, a local folder, a local
    MLflow store; --storage and --tracking-uri point it at an S3 bucket and an MLflow server instead)."""
    from devtools.demo import demo_text, run_demo

    def step() -> Any:
        if not (videos / "demo.mp4").is_file():
            raise ConfigError(
                f"--videos {videos}: no demo.mp4 there; the bundled videos are in a checkout's "
                "tests/fixtures/videos (run from the checkout, or pass --videos)"
            )
        try:
            if training not in ("short", "full"):
                raise ConfigError(f"--training {training!r}: short or full")
            return run_demo(
                workdir,
                videos,
                per_class=per_class,
                epochs=epochs,
                training=training,  # type: ignore[arg-type]
                storage_uri=common.storage,
                tracking_uri=tracking_uri,
            )
        except RuntimeError as exc:  # the DAG failed: the message names its log
            raise ActionRecognitionError(str(exc)) from exc

    common.run(step, summarise=lambda r: r.as_dict(), human=lambda r: demo_text(r, videos / "demo.mp4"))


@step_command(config=False, group=app)
def smoke(
    common: Common,
    workdir: Annotated[Path, typer.Option("--workdir", help="Where the smoke run keeps everything.")] = Path(
        ".smoke"
    ),
    annotations: Annotated[
        str | None, typer.Option("--annotations", help="Kinetics CSV (default: K700 val).")
    ] = None,
    url_template: Annotated[str | None, typer.Option("--url-template", help="Default: YouTube.")] = None,
    pose_source: Annotated[
        str | None, typer.Option("--pose-weights-from", help="Pose weights URL or file.")
    ] = None,
    backbone_source: Annotated[
        str | None, typer.Option("--backbone-weights-from", help="RGB backbone state dict URL or file.")
    ] = None,
    classes: Annotated[
        list[str] | None, typer.Option("--class", help="A class to use (repeat; default 3).")
    ] = None,
    per_class: Annotated[int, typer.Option("--per-class", min=1)] = 3,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 30,
    tracking_uri: Annotated[
        str | None,
        typer.Option("--tracking-uri", help="An MLflow server (default: a SQLite store in WORKDIR)."),
    ] = None,
    dataset: Annotated[
        str, typer.Option("--dataset", help="Dataset name (storage keys, model names).")
    ] = "smoke",
) -> None:
    """A networked machine's first real run (make smoke-online): the real Kinetics CSV, 3 classes x 3 clips,
    real YouTube, real weights pulled into storage, real training; per-step seconds, the ledger and the
    champions."""
    from devtools import smoke as s

    options: dict[str, Any] = {
        "annotations": annotations,
        "url_template": url_template,
        "pose_source": pose_source,
        "backbone_source": backbone_source,
        "classes": tuple(classes) if classes else None,
        "storage_uri": common.storage,  # --storage (default: WORKDIR/storage)
        "tracking_uri": tracking_uri,
    }
    kwargs = {k: v for k, v in options.items() if v is not None}

    def step() -> Any:
        try:
            return s.run_smoke(workdir, per_class=per_class, epochs=epochs, dataset=dataset, **kwargs)
        except RuntimeError as exc:  # the DAG failed: its log is named in the message
            raise ActionRecognitionError(str(exc)) from exc

    common.run(step, summarise=lambda r: r.as_dict(), human=lambda r: r.table())


@app.command("demo-site")
def demo_site(
    folder: Annotated[Path, typer.Argument(help="Folder to write the site into.")],
    videos: Annotated[Path, typer.Option("--videos", help="Folder of the bundled real videos.")] = Path(
        "tests/fixtures/videos"
    ),
    per_class: Annotated[
        int, typer.Option("--per-class", help="Generated videos per demo class.", min=1)
    ] = 6,
    as_json: JsonOpt = False,
) -> None:
    """Write the demo's "YouTube" (videos, annotation CSV, routes) for `serve-videos`."""
    from devtools.demo import build_demo_site

    run_step(
        lambda: build_demo_site(folder, videos, per_class),
        as_json=as_json,
        summarise=lambda r: {"folder": str(folder), "videos": len(r)},
        human=lambda r: f"demo site in {folder}: {len(r)} videos",
    )


@app.command("serve-videos")
def serve_videos(
    folder: Annotated[Path, typer.Argument(help="A folder made by `demo-site`.")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    log_level: LogOpt = "INFO",
) -> None:
    """Serve a demo site over HTTP with Range support: /v/<youtube_id>.mp4 and the annotation CSVs at
    /<name>.csv."""
    setup_logging(log_level)
    import time

    from devtools.demo import load_demo_site
    from devtools.localserve import VideoServer

    routes, files = load_demo_site(folder)
    with VideoServer(routes, host=host, port=port, files=files) as server:  # type: ignore[arg-type]
        logging.getLogger(__name__).info(
            "serving %d videos and %s at %s", len(routes), sorted(files), server.base_url
        )
        while True:
            time.sleep(3600)
