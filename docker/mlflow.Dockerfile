# MLflow tracking server with the PostgreSQL driver and boto3 (artifacts proxied to MinIO).
ARG MLFLOW_IMAGE=ghcr.io/mlflow/mlflow:v3.17.2
FROM ${MLFLOW_IMAGE}
RUN pip install --no-cache-dir psycopg2-binary boto3 "mlflow[auth]==3.17.2"
