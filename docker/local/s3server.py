"""The local stack's stand-in for MinIO: moto's S3 and IAM servers with request authentication on.

MinIO cannot be had on this machine (no image pull, no Debian or PyPI package). moto's server speaks the same
S3 API and evaluates IAM policies on every request once authentication is on, so the stack's least-privilege
keys (docker/minio/*.json) are enforced for real. What MinIO does and moto does not, this adds:

- the root user from ``MINIO_ROOT_USER`` / ``MINIO_ROOT_PASSWORD`` (an IAM user with an allow-all policy);
- service keys whose id and secret the administrator chooses (``mc admin user add``): ``PUT
  /minio/admin/v3/add-user?accessKey=ID`` with ``{"secretKey": ...}``, HTTP basic auth with the root
  credentials;
- ``/minio/health/live`` and ``/minio/health/ready``.

Data lives in memory: a restart of this container empties it (unlike MinIO's volume). Run as the MinIO image
is run: ``s3server.py server /data --console-address :9001`` (the console is not provided).
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import os
import sys
from typing import Any
from urllib.parse import parse_qs

os.environ.setdefault(
    "INITIAL_NO_AUTH_ACTION_COUNT", "0"
)  # before moto is imported: every request is checked
os.environ.setdefault("MOTO_ALLOW_NONEXISTENT_REGION", "true")

ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)
ACCOUNT = "123456789012"


def iam_backend() -> Any:
    from moto.iam.models import iam_backends

    return iam_backends[ACCOUNT]["aws"]


def set_user_key(user: str, access_key: str, secret: str, *, admin: bool = False) -> None:
    """An IAM user named after its access key, holding exactly that key (created or rotated in place)."""
    backend = iam_backend()
    if user not in backend.users:
        backend.create_user(region_name="us-east-1", user_name=user)
    if admin:
        backend.put_user_policy(user, "allow-all", ALLOW_ALL)
    found = backend.users[user].access_keys
    key = found[0] if found else backend.create_access_key(user)
    backend.access_keys.pop(key.physical_resource_id, None)
    key.access_key_id, key.secret_access_key = access_key, secret
    backend.access_keys[key.physical_resource_id] = key


def _answer(start_response: Any, status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def admin_app(moto_app: Any, root_user: str, root_password: str) -> Any:
    """moto's WSGI app with MinIO's health and add-user endpoints in front of it."""
    expected = "Basic " + base64.b64encode(f"{root_user}:{root_password}".encode()).decode()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path in ("/minio/health/live", "/minio/health/ready"):
            return _answer(start_response, "200 OK", {"status": "ok"})
        if path == "/minio/admin/v3/add-user":
            if not hmac.compare_digest(environ.get("HTTP_AUTHORIZATION", ""), expected):
                return _answer(start_response, "403 Forbidden", {"error": "root credentials required"})
            if environ.get("REQUEST_METHOD") != "PUT":
                return _answer(start_response, "405 Method Not Allowed", {"error": "PUT only"})
            key = (parse_qs(environ.get("QUERY_STRING", "")).get("accessKey") or [""])[0]
            length = int(environ.get("CONTENT_LENGTH") or 0)
            try:
                secret = str(json.loads(environ["wsgi.input"].read(length) or b"{}")["secretKey"])
            except (ValueError, KeyError) as exc:
                return _answer(start_response, "400 Bad Request", {"error": f"body needs secretKey: {exc}"})
            if not key or not secret or len(key) > 128:
                return _answer(
                    start_response, "400 Bad Request", {"error": "accessKey and secretKey are required"}
                )
            set_user_key(key, key, secret)
            return _answer(start_response, "200 OK", {"accessKey": key})
        return moto_app(environ, start_response)

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["server"])
    parser.add_argument("data", help="MinIO's data folder (unused: moto keeps data in memory)")
    parser.add_argument("--address", default=":9000")
    parser.add_argument(
        "--console-address", default=None, help="accepted for MinIO compatibility; no console"
    )
    args = parser.parse_args(argv)
    root_user, root_password = (
        os.environ.get("MINIO_ROOT_USER", ""),
        os.environ.get("MINIO_ROOT_PASSWORD", ""),
    )
    if len(root_user) < 3 or len(root_password) < 8:
        print("MINIO_ROOT_USER (3+ characters) and MINIO_ROOT_PASSWORD (8+) must be set", file=sys.stderr)
        return 2
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import run_simple

    set_user_key(root_user, root_user, root_password, admin=True)
    host, _, port = args.address.rpartition(":")
    print(
        f"S3-compatible server (moto, IAM auth on) on {host or '0.0.0.0'}:{port}; data in memory", flush=True
    )
    app = admin_app(DomainDispatcherApplication(create_backend_app), root_user, root_password)
    run_simple(host or "0.0.0.0", int(port), app, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
