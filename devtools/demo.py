"""``python -m devtools demo``: the whole ``kinetics_pipeline`` DAG on the embedded defaults, offline.

Airflow runs the DAG in-process (``airflow dags test``) on SQLite, with a local storage folder, a local MLflow
store (SQLite) and the local runner. The "YouTube" it downloads from is a local HTTP server with Range support
serving the bundled real videos and generated ones; one id answers 404, so the ledger, the top-up and the
status show how a lost clip is replaced. Pose uses untrained YOLO weights and the RGB model an untrained
backbone (nothing can be downloaded here): the run is real end to end, and every output says untrained.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from action_recognition.config import ReviewConfig, StorageConfig, TrainConfig
from action_recognition.names import DOWNLOAD_POOL, model_name
from action_recognition.profiles import SHORT_REVIEW, SHORT_TRAINING, short_training_env
from action_recognition.storage import Storage, open_storage
from devtools.localserve import VideoServer

log = logging.getLogger(__name__)

#: Demo classes (real Kinetics-600 names) and the lavfi pattern each one's generated videos show.
DEMO_CLASSES = {"salsa dancing": "testsrc2", "tap dancing": "mandelbrot", "robot dancing": "smptebars"}
REAL_VIDEOS = ["demo.mp4", "test.mp4", "S001C001P001R001A001_rgb.avi", "demo_skeleton.mp4"]
INFER_PREFIX = "incoming/"


@dataclass
class DemoResult:
    """Where the demo left everything."""

    workdir: str
    storage: str
    tracking_uri: str
    summary: dict[str, object]

    def as_dict(self) -> dict[str, object]:
        return {
            "workdir": self.workdir,
            "storage": self.storage,
            "tracking_uri": self.tracking_uri,
            **self.summary,
        }


def make_demo_videos(folder: Path, per_class: int, seconds: float = 3.0) -> dict[str, Path]:
    """Generated videos: ``per_class`` per demo class, a distinct moving pattern per class. youtube id ->
    file."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for k, pattern in enumerate(DEMO_CLASSES.values()):
        for i in range(per_class):
            vid = f"gen{k}{i:07d}x"[:11]
            path = folder / f"{vid}.mp4"
            if not path.exists():
                size = ["320x240", "352x288", "426x240"][i % 3]
                argv = [
                    "ffmpeg",
                    "-nostdin",
                    "-v",
                    "error",
                    "-y",
                    "-f",
                    "lavfi",
                    "-i",
                    f"{pattern}=size={size}:rate=25",
                    "-t",
                    f"{seconds + 1}",
                    "-vf",
                    f"hue=h={i * 25}",
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-pix_fmt",
                    "yuv420p",
                    "-movflags",
                    "+faststart",
                    str(path),
                ]
                subprocess.run(argv, check=True, timeout=120)
            out[vid] = path
    return out


def write_demo_annotations(
    path: Path, generated: dict[str, Path], videos: Path
) -> tuple[Path, dict[str, object]]:
    """A Kinetics-600-style CSV for the demo videos; returns it and the server routes."""
    labels = list(DEMO_CLASSES)
    rows = [f"{labels[int(vid[3])]},{vid},0,3,train" for vid in generated]
    routes: dict[str, object] = dict(generated)
    for j, name in enumerate(REAL_VIDEOS):
        vid = f"real{j:06d}xx"[:11]
        routes[vid] = videos / name
        rows.append(f"{labels[j % len(labels)]},{vid},0,2,train")
    rows.append(f"{labels[0]},gone0000404,0,3,train")  # answers 404: unavailable, then replaced by a top-up
    path.write_text("label,youtube_id,time_start,time_end,split\n" + "\n".join(rows) + "\n")
    return path, routes


DEMO_CSV = "kinetics-600_demo.csv"


def build_demo_site(folder: Path, videos: Path, per_class: int) -> dict[str, object]:
    """A folder a video server can serve as the demo's "YouTube": the videos, the annotation CSV naming them
    and ``routes.json`` (youtube id -> file name; ids absent from it answer 404). Returns the routes."""
    folder.mkdir(parents=True, exist_ok=True)
    generated = make_demo_videos(folder / "videos", per_class)
    _, routes = write_demo_annotations(folder / DEMO_CSV, generated, videos)
    for vid, path in list(routes.items()):
        if (
            isinstance(path, Path) and folder not in path.parents
        ):  # a bundled video: copied in, the site is whole
            target = folder / "videos" / f"{vid}{path.suffix}"
            if not target.exists():
                target.write_bytes(path.read_bytes())
            routes[vid] = target
    names = {vid: str(Path(str(path)).relative_to(folder)) for vid, path in routes.items()}
    (folder / "routes.json").write_text(json.dumps(names, indent=1, sort_keys=True))
    return routes


def load_demo_site(folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """(video routes, static files) of a folder made by :func:`build_demo_site`."""
    names = json.loads((folder / "routes.json").read_text())
    routes = {vid: folder / name for vid, name in names.items()}
    return routes, {f"/{p.name}": p for p in folder.glob("*.csv")}


def local_airflow(workdir: Path, **extra: str) -> dict[str, str]:
    """The environment of an in-process Airflow (``airflow dags test``) on SQLite under ``workdir``, with this
    checkout's DAGs and plugins, a local MLflow store and the local runner; its database migrated and the
    download pool made. INFO logs: the progress display reads the task lines from them."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(workdir / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "false",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "PYTHONPATH": os.pathsep.join([str(root / "plugins"), env.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            ),
            "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "AR_RUNNER": "local",
            "AR__TRAIN__SYSTEM_METRICS": "false",
            "XDG_CACHE_HOME": str(workdir / "cache"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
            **extra,
        }
    )
    airflow = [sys.executable, "-m", "airflow"]
    subprocess.run([*airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    subprocess.run(
        [*airflow, "pools", "set", DOWNLOAD_POOL, "4", "Concurrent YouTube downloads"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return env


def dags_test(
    workdir: Path,
    env: dict[str, str],
    conf: Mapping[str, object],
    timeout_s: float,
    dag_id: str = "kinetics_pipeline",
) -> None:
    """``airflow dags test <dag_id>`` with ``conf``: its whole log in ``workdir/dags-test.log``
    (``dags-test-<dag id>.log`` for another DAG) and its conf beside it (``.conf.json``); on stderr each task
    as it starts and ends (with its duration and counts), then a table of the tasks."""
    from devtools.progress import DagProgress

    log_path = workdir / ("dags-test.log" if dag_id == "kinetics_pipeline" else f"dags-test-{dag_id}.log")
    log_path.with_suffix(".conf.json").write_text(json.dumps(conf, indent=1) + "\n")  # to run it again
    log.info("running %s with airflow dags test; full log in %s", dag_id, log_path)
    argv = [sys.executable, "-m", "airflow", "dags", "test", dag_id, "-c", json.dumps(conf)]
    progress = DagProgress()
    deadline = time.monotonic() + timeout_s
    tail: list[str] = []
    with (
        log_path.open("w") as log_file,
        subprocess.Popen(
            argv, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            log_file.write(line)
            progress.feed(line)
            tail = [*tail[-40:], line]
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"the {dag_id} run took longer than {timeout_s:.0f} s; see {log_path}")
        code = proc.wait()
    progress.close()
    print(progress.table(), file=sys.stderr)
    if code != 0:
        failed = sorted({r.task_id for r in progress.tasks.values() if r.state in ("failed", "up_for_retry")})
        log.debug("the last lines of the DAG run:\n%s", "".join(tail))
        raise RuntimeError(
            f"the {dag_id} run failed at {', '.join(failed) or 'an unknown task'} (exit {code}); "
            f"full log: {log_path}"
        )


def demo_settings(
    training: Literal["short", "full"] = "short",
    tracking_uri: str | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The demo's own settings for its Airflow process, over :func:`local_airflow`'s: no retries of a lost
    video, the training profile, the MLflow server when given."""
    return {
        "AR__DOWNLOAD__BACKOFF_BASE_S": "0.2",
        "AR_NETWORK_RETRIES": "0",
        "AR__POSE__CONF": "0.0001",  # untrained weights score everything low: keep their (meaningless) people
        **(short_training_env() if training == "short" else {}),
        **({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}),
        **(extra_env or {}),
    }


def run_demo(
    workdir: Path,
    videos: Path,
    *,
    per_class: int = 8,
    epochs: int | None = None,
    training: Literal["short", "full"] = "short",
    storage_uri: str | None = None,
    tracking_uri: str | None = None,
    timeout_s: float = 1800,
) -> DemoResult:
    """Run the DAG end to end (see the module docstring) and return where its outputs are. ``training``: the
    short profile (:data:`~action_recognition.profiles.SHORT_TRAINING`, the default) or the product's full
    recipe; ``epochs`` defaults to the profile's (12 for the full recipe). ``storage_uri`` (default:
    ``workdir/storage``) and ``tracking_uri`` (default: a SQLite store in ``workdir``) point it at a
    deployment's own S3 bucket and MLflow server, their keys from the environment (``AR__*`` settings there
    reach the Airflow process too)."""
    if epochs is None:
        epochs = int(SHORT_TRAINING["epochs"]) if training == "short" else 12
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    storage_uri = storage_uri or str(workdir / "storage")
    store = open_storage(StorageConfig(uri=storage_uri))
    generated = make_demo_videos(workdir / "videos", per_class + 2)
    csv_path, routes = write_demo_annotations(workdir / "kinetics-600_demo.csv", generated, videos)
    env = local_airflow(workdir, **demo_settings(training, tracking_uri))
    with VideoServer(routes) as server:  # type: ignore[arg-type]
        conf = {
            "annotations": [str(csv_path)],
            "classes": [],
            "class_contains": "dancing",
            "per_class": per_class,
            "clips_per_shard": 12,
            "url_template": server.url_template,
            "pose_untrained": True,
            "rgb_allow_untrained": True,
            "epochs": epochs,
            "storage_uri": storage_uri,
            "dataset": "demo",
            "runner": "local",
            "gpu_enabled": False,
        }
        dags_test(workdir, env, conf, timeout_s)
    # Then batch inference with the new video champion: the bundled real videos and one file that is not a
    # video.
    for name in REAL_VIDEOS:
        store.put_file(INFER_PREFIX + name, videos / name)
    store.put_bytes(
        INFER_PREFIX + "not-a-video.mp4", b"a text file with a video's name: the ledger says bad_media\n"
    )
    infer = {
        "dataset": "demo",
        "storage_uri": storage_uri,
        "runner": "local",
        "gpu_enabled": False,
        "input_prefix": INFER_PREFIX,
        "overlays": True,
        "videos_per_shard": 3,
    }
    dags_test(workdir, env, infer, timeout_s, dag_id="kinetics_infer")
    tracking = env["MLFLOW_TRACKING_URI"]
    summary = demo_summary(store, tracking, "demo")
    summary["inference"] = champion_inference(store, "demo", summary)
    summary["training"] = training_words(training, epochs)
    return DemoResult(str(workdir), storage_uri, tracking, summary)


def training_words(training: str, epochs: int) -> str:
    """What the demo trained, said plainly: the short profile is not the product's recipe."""
    product = TrainConfig()
    if training == "short":
        return (
            f"short profile: one model per family, {epochs} epochs, a {SHORT_REVIEW['folds']}-fold review "
            f"(the product's default is recipe {product.recipe}: keypoints fixed, {product.seeds} seeds x "
            f"{product.epochs} epochs on a small set; frames refit, {product.seeds} seeds after selection; "
            f"a {ReviewConfig().folds}-fold review; --training full)"
        )
    return f"full recipe ({product.recipe}, {product.seeds} seeds), {epochs} epochs"


def demo_summary(storage: Storage, tracking_uri: str, dataset: str) -> dict[str, object]:
    """Ledger counts and, per model family, the champion's version and metrics."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from action_recognition.ledger import status

    report = status(storage, dataset)
    client = MlflowClient(tracking_uri)
    models: dict[str, object] = {}
    for family in ("keypoint", "rgb", "video"):
        name = model_name(dataset, family)
        try:
            version = client.get_model_version_by_alias(name, "champion")
        except MlflowException:
            continue
        models[name] = {
            "champion": f"models:/{name}@champion",
            "version": version.version,
            "metrics": json.loads(version.tags.get("ar.metrics", "{}")),
            "untrained": version.tags.get("ar.untrained") == "true",
        }
    return {"rows": report.rows, "states": report.states, "models": models}


def champion_inference(storage: Storage, dataset: str, summary: Mapping[str, object]) -> object:
    """The summary of the ``kinetics_infer`` run on ``dataset`` with the video champion's version (None if
    there is none)."""
    models = summary.get("models")
    video = models.get(model_name(dataset, "video")) if isinstance(models, dict) else None
    if not video:
        return None
    wanted = f"models:/{model_name(dataset, 'video')}/{video['version']}"
    for key in storage.list(f"inference/{dataset}/"):
        if key.endswith("/summary.json"):
            found = json.loads(storage.get_bytes(key))
            if found.get("model_uri") == wanted:
                return found
    return None


def demo_text(result: DemoResult, video: Path) -> str:
    """What the demo prints when it ends: the ledger, the champions, the inference, and three next steps that
    work as printed (``video``: the file the predict step names)."""
    summary = result.summary
    lines = [
        f"demo finished in {result.workdir}: {summary.get('rows')} clips, states {summary.get('states')}"
    ]
    models = summary.get("models")
    for info in (models if isinstance(models, dict) else {}).values():
        flag = ", UNTRAINED" if info["untrained"] else ""
        top1 = info["metrics"].get("test_top1", float("nan"))
        lines.append(f"  {info['champion']} (version {info['version']}{flag}): test top-1 {top1:.3f}")
    inference = summary.get("inference")
    if isinstance(inference, dict):
        lines.append(
            f"  kinetics_infer: {inference['videos']} videos with {inference['model_uri']}: "
            f"{inference['counts']} -> {inference['predictions_uri']}"
        )
    lines.append(f"training: {summary.get('training')}")
    lines.append(
        f"storage: {result.storage}  (action-recognition status --storage {result.storage} --dataset demo)"
    )
    tracking = result.tracking_uri
    ui = (
        f"open {tracking}"
        if tracking.startswith(("http://", "https://"))
        else f"mlflow ui --backend-store-uri {tracking} --port 5000   (then http://127.0.0.1:5000)"
    )
    lines += [
        "next:",
        f"  1. the runs and the registry:  {ui}",
        f"  2. predict with the champion:  action-recognition predict {video.resolve()} --model "
        f"models:/demo-rgb@champion --tracking-uri {tracking}",
        "  3. the deployed shape, trigger it from the Airflow UI:  make stack-up",
    ]
    return "\n".join(lines)
