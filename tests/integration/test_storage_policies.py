"""The MinIO service keys' policies (docker/minio/*.json), enforced by a real S3 server: each key reaches its
own bucket and nothing else. MinIO cannot be pulled here; moto's server evaluates the same IAM policy
documents once authentication is switched on (INITIAL_NO_AUTH_ACTION_COUNT), so the policy files themselves
are what is tested."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from action_recognition.config import StorageConfig
from action_recognition.errors import StorageError
from action_recognition.storage import open_storage
from tests.support.airflow import ROOT
from tests.support.paths import free_port
from tests.support.reliability import Reliability

pytestmark = pytest.mark.integration

SETUP_ACTIONS = 9  # the unauthenticated set-up calls below, one by one; every later call is authorised


@pytest.fixture(scope="module")
def policed_s3() -> Iterator[dict[str, Any]]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(SETUP_ACTIONS))
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.2)
    admin = {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "admin",
        "aws_secret_access_key": "admin",
    }
    try:
        s3, iam = boto3.client("s3", **admin), boto3.client("iam", **admin)
        s3.create_bucket(Bucket="action-recognition")  # 1
        s3.create_bucket(Bucket="mlflow")  # 2
        s3.put_object(Bucket="mlflow", Key="1/abc/artifacts/model.pt", Body=b"weights")  # 3
        keys = {}
        for user, policy in (("ar-pipeline", "pipeline.json"), ("ar-mlflow", "mlflow.json")):
            iam.create_user(UserName=user)  # 4, 5
            iam.put_user_policy(
                UserName=user,
                PolicyName=user,  # 6, 7
                PolicyDocument=(ROOT / "docker" / "minio" / policy).read_text(),
            )
            key = iam.create_access_key(UserName=user)["AccessKey"]  # 8, 9
            keys[user] = {
                "aws_access_key_id": key["AccessKeyId"],
                "aws_secret_access_key": key["SecretAccessKey"],
            }
        yield {"endpoint": endpoint, "keys": keys}
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _client(s3: dict[str, Any], user: str) -> Any:
    return boto3.client("s3", endpoint_url=s3["endpoint"], region_name="us-east-1", **s3["keys"][user])


def test_each_key_works_in_its_own_bucket(
    policed_s3: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = policed_s3["keys"]["ar-pipeline"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds["aws_secret_access_key"])
    store = open_storage(
        StorageConfig(uri="s3://action-recognition/data", endpoint_url=policed_s3["endpoint"])
    )
    store.put_bytes("datasets/x/plan.json", json.dumps({"ok": 1}).encode())
    assert store.get_bytes("datasets/x/plan.json") == b'{"ok": 1}'
    assert store.list("datasets/") == ["datasets/x/plan.json"]
    mlflow = _client(policed_s3, "ar-mlflow")
    mlflow.put_object(Bucket="mlflow", Key="2/def/artifacts/card.md", Body=b"card")
    assert mlflow.get_object(Bucket="mlflow", Key="1/abc/artifacts/model.pt")["Body"].read() == b"weights"


def _probes(s3: dict[str, Any]) -> dict[str, Callable[[], object]]:
    pipe, mlf = _client(s3, "ar-pipeline"), _client(s3, "ar-mlflow")
    return {
        "pipeline key reads a model in the MLflow bucket": lambda: pipe.get_object(
            Bucket="mlflow", Key="1/abc/artifacts/model.pt"
        ),
        "pipeline key deletes in the MLflow bucket": lambda: pipe.delete_object(
            Bucket="mlflow", Key="1/abc/artifacts/model.pt"
        ),
        "pipeline key overwrites a model in the MLflow bucket": lambda: pipe.put_object(
            Bucket="mlflow", Key="1/abc/artifacts/model.pt", Body=b"evil"
        ),
        "pipeline key lists the MLflow bucket": lambda: pipe.list_objects_v2(Bucket="mlflow"),
        "pipeline key creates a bucket": lambda: pipe.create_bucket(Bucket="exfiltrate"),
        "pipeline key deletes its own bucket": lambda: pipe.delete_bucket(Bucket="action-recognition"),
        "pipeline key rewrites its bucket's policy": lambda: pipe.put_bucket_policy(
            Bucket="action-recognition", Policy=json.dumps({"Version": "2012-10-17", "Statement": []})
        ),
        "MLflow key writes into the data bucket": lambda: mlf.put_object(
            Bucket="action-recognition", Key="datasets/x/plan.json", Body=b"evil"
        ),
        "MLflow key lists the data bucket": lambda: mlf.list_objects_v2(Bucket="action-recognition"),
        "an unknown key reads anything": lambda: boto3.client(
            "s3",
            endpoint_url=s3["endpoint"],
            region_name="us-east-1",
            aws_access_key_id="AKIANOBODY",
            aws_secret_access_key="x",
        ).get_object(Bucket="action-recognition", Key="datasets/x/plan.json"),
    }


PROBES = [
    "pipeline key reads a model in the MLflow bucket",
    "pipeline key deletes in the MLflow bucket",
    "pipeline key overwrites a model in the MLflow bucket",
    "pipeline key lists the MLflow bucket",
    "pipeline key creates a bucket",
    "pipeline key deletes its own bucket",
    "pipeline key rewrites its bucket's policy",
    "MLflow key writes into the data bucket",
    "MLflow key lists the data bucket",
    "an unknown key reads anything",
]


@pytest.mark.parametrize("probe", PROBES)
def test_a_key_outside_its_bucket_is_refused(
    probe: str, policed_s3: dict[str, Any], reliability: Reliability
) -> None:
    with reliability.probe(f"storage: {probe}"):
        with pytest.raises(ClientError) as err:
            _probes(policed_s3)[probe]()
        assert err.value.response["Error"]["Code"] in ("AccessDenied", "InvalidAccessKeyId", "403"), err.value
    owner = _client(policed_s3, "ar-mlflow")
    assert owner.get_object(Bucket="mlflow", Key="1/abc/artifacts/model.pt")["Body"].read() == b"weights"


def test_the_product_names_the_refusal(policed_s3: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the storage layer, a refused key is a clear StorageError naming the URI (not a retry loop)."""
    creds = policed_s3["keys"]["ar-pipeline"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds["aws_secret_access_key"])
    store = open_storage(StorageConfig(uri="s3://mlflow/1", endpoint_url=policed_s3["endpoint"]))
    began = time.monotonic()
    with pytest.raises(StorageError, match=r"s3://mlflow/1/abc/artifacts/model\.pt"):
        store.get_bytes("abc/artifacts/model.pt")
    assert time.monotonic() - began < 10
