#!/bin/sh
# Buckets and least-privilege service keys: the pipeline's key reaches only the data bucket, MLflow's only the
# artifact bucket. Idempotent: safe to run on every `docker compose up`.
set -eu
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing local/action-recognition
mc mb --ignore-existing local/mlflow
mc admin policy create local ar-pipeline /policies/pipeline.json
mc admin policy create local ar-mlflow /policies/mlflow.json
mc admin user add local "$AR_S3_ACCESS_KEY" "$AR_S3_SECRET_KEY"
mc admin user add local "$MLFLOW_S3_ACCESS_KEY" "$MLFLOW_S3_SECRET_KEY"
mc admin policy attach local ar-pipeline --user "$AR_S3_ACCESS_KEY" || true
mc admin policy attach local ar-mlflow --user "$MLFLOW_S3_ACCESS_KEY" || true
