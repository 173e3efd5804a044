# What docker/airflow.Dockerfile expects of its base (the official apache/airflow image), built locally: Airflow in
# the project's venv, the `airflow` user (uid 50000, gid 0), AIRFLOW_HOME=/opt/airflow writable by group 0, and the
# official entrypoint's contract (`airflow <command>` by default; `bash`/`python`/paths run as given).
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}
ENV AIRFLOW_HOME=/opt/airflow AIRFLOW_USER_HOME_DIR=/home/airflow
RUN useradd --uid 50000 --gid 0 --home-dir /home/airflow --create-home --shell /bin/bash airflow \
 && mkdir -p /opt/airflow/dags /opt/airflow/plugins /opt/airflow/logs \
 && chown -R airflow:0 /opt/airflow /home/airflow && chmod -R g+rwX /opt/airflow /home/airflow
COPY airflow-entrypoint.sh /entrypoint
WORKDIR /opt/airflow
# root while building, like pip in the official image writes where it may; compose runs the services as 50000:0.
ENTRYPOINT ["/entrypoint"]
CMD []
