# What docker/mlflow.Dockerfile expects of its base (ghcr.io/mlflow/mlflow), built locally: `mlflow` and `python`
# on PATH, from the project's venv (MLflow 3.17.2 with the auth extra, psycopg2, boto3, all in the lock).
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}
RUN useradd --create-home --uid 10003 mlflow
WORKDIR /home/mlflow
