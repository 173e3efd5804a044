-- Runs once on an empty volume: a database for MLflow beside Airflow's (the passwords come from the environment
-- through psql variables set by postgres-init.sh).
CREATE USER mlflow WITH PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
