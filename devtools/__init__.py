"""Developer tools beside ``dags/``: the demo, the smoke run, the Airflow-log progress reader and the local
"YouTube". They import the package; the package never imports them (tests/unit/test_code_shape.py)."""
