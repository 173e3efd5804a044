# The local stack's "YouTube": the demo dataset (bundled real videos and generated ones, one id answering 404) and
# its Kinetics-style annotation CSV, served with HTTP Range support (devtools/localserve.py).
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}
COPY action_recognition /opt/action-recognition/action_recognition
COPY devtools /opt/action-recognition/devtools
COPY tests/fixtures/videos /opt/demo-videos
ENV PYTHONPATH=/opt/action-recognition
RUN useradd --create-home --uid 10004 videos \
 && python -m devtools demo-site /srv/demo --videos /opt/demo-videos --per-class 6 \
 && chown -R videos /srv/demo
USER videos
EXPOSE 8000
CMD ["python", "-m", "devtools", "serve-videos", "/srv/demo", "--host", "0.0.0.0", "--port", "8000"]
