# The Python layer every locally built stack image shares: the project's locked venv (the one `make venv` built and
# the tests use: Airflow, MLflow, torch, Ultralytics, moto...), relocated to /opt/venv on Debian's python3 (3.11,
# the ABI of the host's). Built from the debootstrap base by scripts/stack-images.sh; nothing is pulled.
ARG BASE_IMAGE=ar-debian-base:bookworm
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false MLFLOW_DISABLE_TELEMETRY=true
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ffmpeg libgl1 libglib2.0-0 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
# The host's CA bundle: pip in later builds (the project's own Dockerfiles) reaches the package index through it.
COPY ca-certificates.crt /etc/ssl/certs/ar-host-ca.crt
ENV PIP_CERT=/etc/ssl/certs/ar-host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY site-packages /opt/venv/lib/python3.11/site-packages
COPY scripts /opt/venv/scripts
# Executables that wheels put in bin/ (deno, yt-dlp's JavaScript runtime), as they are.
COPY bin /opt/venv/bin/
# Console scripts carry the host venv's interpreter path: point them at this one.
RUN for f in /opt/venv/scripts/*; do \
      sed -i '1s|^#!.*python[0-9.]*$|#!/opt/venv/bin/python3|' "$f" && mv "$f" /opt/venv/bin/; \
    done && rmdir /opt/venv/scripts
