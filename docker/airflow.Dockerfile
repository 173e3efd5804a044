# Airflow scheduler, dag-processor, triggerer and api-server: the official image plus the providers and the light
# part of action-recognition (config, storage, ledger, the Airflow adapter). No torch here: heavy steps run in the
# worker image through DockerOperator.
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}
COPY --chown=airflow:0 pyproject.toml README.md /opt/action-recognition/
COPY --chown=airflow:0 action_recognition /opt/action-recognition/action_recognition
COPY --chown=airflow:0 requirements/lock.txt scripts/lock.py /opt/action-recognition/lock/
# The versions of the lock file (its hashes are for the dev/CI platform's wheels); the base image keeps its Airflow.
RUN python /opt/action-recognition/lock/lock.py --lock /opt/action-recognition/lock/lock.txt --constraints > /tmp/constraints.txt \
 && pip install --no-cache-dir --constraint /tmp/constraints.txt "apache-airflow==3.3.2" \
      apache-airflow-providers-docker apache-airflow-providers-amazon apache-airflow-providers-postgres \
      apache-airflow-providers-celery psycopg2-binary "/opt/action-recognition[airflow]" \
 && rm /tmp/constraints.txt
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins
