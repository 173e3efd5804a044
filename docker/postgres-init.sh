#!/bin/bash
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v mlflow_password="$MLFLOW_DB_PASSWORD" -f /docker-entrypoint-initdb.d/sql/postgres-init.sql
