# The worker for the local stack: the project's venv (torch CPU/CUDA build of the lock, Ultralytics, yt-dlp, MLflow)
# and this package, on the debootstrap Debian base with ffmpeg. docker/worker.Dockerfile is the production one (CUDA
# base image); it cannot be had here. deno and the EJS scripts come with the venv (the lock) in both. Same CLI, same user, same environment.
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}
COPY pyproject.toml README.md /opt/action-recognition/
COPY action_recognition /opt/action-recognition/action_recognition
RUN pip install --no-deps --no-build-isolation --no-cache-dir /opt/action-recognition \
 && useradd --create-home --uid 10001 worker
USER worker
# No git in the image: GitPython stays quiet instead of MLflow logging a 30-line warning in every training log.
ENV HOME=/home/worker XDG_CACHE_HOME=/home/worker/.cache GIT_PYTHON_REFRESH=quiet
ENTRYPOINT []
CMD ["python3", "-m", "action_recognition", "--help"]
