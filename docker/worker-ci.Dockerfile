# A worker image that CI can build without pulling anything: a Debian base made locally with debootstrap
# (scripts/docker-images.sh), Debian's python3 (3.11, like the host) and ffmpeg, and the host's venv and source
# mounted read-only at run time (AR_DOCKER_MOUNTS). Same CLI, same steps, CPU only.
ARG BASE_IMAGE=ar-debian-base:bookworm
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PYTHONPATH=/opt/src:/opt/venv-site YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false MLFLOW_DISABLE_TELEMETRY=true
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ffmpeg libgl1 libglib2.0-0 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 worker
USER worker
# No git in the image: GitPython stays quiet instead of MLflow logging a 30-line warning in every training log.
ENV HOME=/home/worker XDG_CACHE_HOME=/tmp/worker-cache GIT_PYTHON_REFRESH=quiet
CMD ["python3", "-m", "action_recognition", "--help"]
