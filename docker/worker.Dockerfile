# The worker image: every heavy step (download, clip, pose, train) runs here, through DockerOperator.
# Default base: the CUDA build of PyTorch. Override with --build-arg BASE_IMAGE=... (e.g. a CPU image).
ARG BASE_IMAGE=pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    YOLO_OFFLINE=1 \
    YOLO_AUTOINSTALL=false \
    MLFLOW_DISABLE_TELEMETRY=true

# ffmpeg for clipping, libgl/glib for OpenCV. deno (the JavaScript runtime yt-dlp needs for YouTube) and the EJS
# scripts come from the lock with the worker extra (yt-dlp[default,deno]), not from a download here.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg libgl1 libglib2.0-0 ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/action-recognition
COPY requirements/lock.txt requirements/lock.txt
COPY scripts/lock.py scripts/lock.py
COPY pyproject.toml README.md ./
COPY action_recognition action_recognition
# torch comes with the base image; everything else of the worker extra is pinned by the lock file.
RUN python3 scripts/lock.py --constraints --exclude '^(torch|torchvision|triton|nvidia-|cuda-)' > /tmp/constraints.txt \
 && pip install --constraint /tmp/constraints.txt ".[worker]" \
 && rm /tmp/constraints.txt

RUN useradd --create-home --uid 10001 worker
USER worker
# No git in the image: GitPython stays quiet instead of MLflow logging a 30-line warning in every training log.
ENV XDG_CACHE_HOME=/home/worker/.cache GIT_PYTHON_REFRESH=quiet
ENTRYPOINT []
CMD ["python3", "-m", "action_recognition", "--help"]
