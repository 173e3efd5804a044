"""Running it: ``doctor``, ``weights``, ``docker-guard``, ``version``, ``capacity``. (The demo, the smoke
run and the local "YouTube" are developer tools: ``python -m devtools``.)"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from action_recognition import __version__
from action_recognition.cli.common import (
    Common,
    LogOpt,
    app,
    fail,
    nested,
    setup_logging,
    step_command,
)
from action_recognition.errors import ActionRecognitionError


@app.command("docker-guard")
def docker_guard(
    listen: Annotated[
        str, typer.Option("--listen", help="host:port to serve the Docker API on.")
    ] = "127.0.0.1:2375",
    engine: Annotated[
        str, typer.Option("--engine", help="The real engine: unix:///var/run/docker.sock or tcp://host:port.")
    ] = "unix:///var/run/docker.sock",
    allow_image: Annotated[
        list[str] | None,
        typer.Option("--allow-image", help="Image pattern a container may run (repeatable)."),
    ] = None,
    allow_bind: Annotated[
        list[str] | None,
        typer.Option("--allow-bind", help="Host folder that may be bind-mounted (repeatable)."),
    ] = None,
    allow_network: Annotated[
        list[str] | None,
        typer.Option("--allow-network", help="Network mode a container may use (repeatable)."),
    ] = None,
    writable_binds: Annotated[
        bool, typer.Option("--writable-binds", help="Allow read-write bind mounts (default: read-only only).")
    ] = False,
    instance: Annotated[
        str,
        typer.Option(
            "--instance", help="Labels what this guard creates; it acts on nothing else (the stack's name)."
        ),
    ] = "default",
    log_level: LogOpt = "INFO",
) -> None:
    """Serve the Docker API to Airflow, refusing privileged containers, host mounts and every call a step
    never makes (see action_recognition/dockerguard.py)."""
    import asyncio

    from action_recognition.dockerguard import Engine, Policy, serve

    setup_logging(log_level)
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter(f"--listen must be host:port, got {listen!r}")
    defaults = Policy()
    policy = Policy(
        images=tuple(allow_image or defaults.images),
        bind_roots=tuple(allow_bind or ()),
        networks=tuple(allow_network or defaults.networks),
        read_only_binds=not writable_binds,
        instance=instance,
    )
    asyncio.run(serve(host, int(port), Engine(engine), policy))


@step_command(log_level="WARNING")
def doctor(
    common: Common,
    gpu: Annotated[bool, typer.Option("--gpu", help="A GPU is required (gpu_enabled).")] = False,
    skip: Annotated[
        list[str] | None, typer.Option("--skip", help="A check to leave out (repeatable).")
    ] = None,
) -> None:
    """Can this machine do the job? ffmpeg, JavaScript runtime + EJS, yt-dlp's age, weights, GPU, storage,
    MLflow, annotation sources. A table (or one JSON line); exit status 2 naming every failure."""
    from action_recognition.doctor import run_checks

    try:
        cfg = common.load(nested())
        report = run_checks(cfg, gpu=gpu, skip=tuple(skip or ()))
    except ActionRecognitionError as exc:
        fail(exc, common.as_json)
    failed = "; ".join(f"{c.name}: {c.detail}" for c in report.failed)
    if common.as_json:
        extra = {"error": f"preflight failed: {failed}", "error_type": "DoctorError", "retryable": False}
        typer.echo(
            json.dumps(
                {"ok": not report.failed, **report.summary(), **(extra if failed else {})}, sort_keys=True
            )
        )
    else:
        typer.echo(report.table())
    if report.failed:
        typer.echo(f"error: preflight failed: {failed}", err=True)
        raise typer.Exit(2)


weights_app = typer.Typer(
    help="Weights are data: pull a file into storage once; steps read it from there.", no_args_is_help=True
)


app.add_typer(weights_app, name="weights")


@step_command("pull", group=weights_app)
def weights_pull(
    common: Common,
    source: Annotated[
        str, typer.Argument(help="https URL (e.g. the Ultralytics release asset) or a local file.")
    ],
    name: Annotated[
        str, typer.Option("--name", help="Name under weights/ in storage, e.g. yolo11n-pose.pt.")
    ],
    sha256: Annotated[str | None, typer.Option("--sha256", help="Refuse a file with another sha256.")] = None,
) -> None:
    """Fetch SOURCE into storage as weights/NAME once (its sha256 recorded): use the printed URI as
    pose.weights or train.backbone_weights. Defaults: yolo11n-pose.pt and resnet18-f37072fd.pth
    (action_recognition.weights)."""
    from action_recognition.storage import open_storage
    from action_recognition.weights import pull

    def step() -> Any:
        cfg = common.load(nested())
        return pull(source, name, open_storage(cfg.storage), sha256=sha256)

    common.run(
        step,
        summarise=lambda r: r.summary(),
        human=lambda r: (
            f"{r.uri} sha256 {r.sha256} ({r.bytes} bytes, {'fetched' if r.fetched else 'already in storage'})"
        ),
    )


@step_command("pull-defaults", group=weights_app)
def weights_pull_defaults(
    common: Common,
    if_online: Annotated[
        bool, typer.Option("--if-online", help="Report unreachable sources instead of failing.")
    ] = False,
    aws_conn_id: Annotated[
        str | None, typer.Option("--aws-conn-id", help="Take the storage keys from this Airflow connection.")
    ] = None,
) -> None:
    """Pull the default pose model and RGB backbone (the stack's init runs this with --if-online)."""
    from action_recognition.services import storage_for
    from action_recognition.weights import pull_defaults

    def step() -> Any:
        cfg = common.load(nested())
        return pull_defaults(storage_for(cfg.storage, aws_conn_id), if_online=if_online)

    def human(r: dict[str, Any]) -> str:
        return "\n".join(
            f"{name}: {info.get('uri') or 'NOT PULLED (' + info['skipped'] + '); later: ' + info['later']}"
            for name, info in r.items()
        )

    common.run(step, summarise=lambda r: {"weights": r}, human=human)


@app.command()
def version() -> None:
    """Print the package version."""
    typer.echo(__version__)


@step_command(log_level="WARNING")
def capacity(
    common: Common,
    clips: Annotated[int, typer.Option("--clips", min=1, help="Clips in the dataset.")],
    classes: Annotated[int, typer.Option("--classes", min=1, help="Classes (reported).")] = 700,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Take the per-clip figures from this dataset's ledgers.")
    ] = None,
    rate_per_hour: Annotated[
        float,
        typer.Option("--rate-per-hour", min=1, help="Stated: downloads an hour one IP gets from YouTube."),
    ] = 300.0,
    ips: Annotated[int, typer.Option("--ips", min=1, help="Egress IPs downloading.")] = 1,
    download_slots: Annotated[
        int, typer.Option("--download-slots", min=1, help="The download pool's slots.")
    ] = 4,
    pose_ms: Annotated[float | None, typer.Option("--pose-ms-per-frame", help="Measured elsewhere.")] = None,
) -> None:
    """What a dataset of N clips costs: download days, storage per layer, pose and training GPU-hours,
    workers."""
    from action_recognition.capacity import CapacityInputs, from_ledger, trainings_per_model
    from action_recognition.capacity import capacity as cost
    from action_recognition.storage import open_storage

    def step() -> Any:
        cfg = common.load()
        labelled = round(clips * CapacityInputs.availability * CapacityInputs.train_share)
        trainings = {
            cfg.train.keypoint_arch: trainings_per_model(cfg.train, "keypoints", labelled),
            cfg.train.rgb_arch: trainings_per_model(cfg.train, "frames", labelled),
        }
        inputs = CapacityInputs(
            clips=clips,
            classes=classes,
            rate_per_hour_per_ip=rate_per_hour,
            ips=ips,
            download_slots=download_slots,
            epochs=cfg.train.epochs,
            trainings_per_model=trainings,
        )
        if pose_ms is not None:
            inputs.pose_ms_per_frame = pose_ms
            inputs.sources["pose_ms_per_frame"] = "given with --pose-ms-per-frame"
        if dataset:
            inputs = from_ledger(open_storage(cfg.storage), dataset, inputs)
        return cost(inputs)

    def human(r: dict[str, Any]) -> str:
        return "\n".join(
            [
                f"{r['clips']:,} clips, {r['classes']} classes ({r['usable_clips']:,} usable)",
                f"download: {r['download_days']} days (bound by the {r['download_bound_by']}); "
                f"{r['ips_for_a_week']} IP(s) for a week",
                f"storage GB: {r['storage_gb']}",
                f"pose: {r['pose_gpu_hours']} GPU-hours; training GPU-hours: {r['train_gpu_hours']}",
                f"Celery workers for a week: {r['celery_workers_for_a_week']}; GPUs for a week: "
                f"{r['gpus_for_a_week']}",
            ]
        )

    common.run(step, summarise=lambda r: r, human=human)
