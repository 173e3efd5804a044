"""A Docker API guard: the only way Airflow reaches the Docker engine, and it refuses what a step never needs.

A socket proxy that filters by URL alone (tecnativa's) cannot see a create request's body, so it lets through
``"Privileged": true`` or a bind mount of ``/``. This guard reads every request, and:

- allows only the calls that starting, watching and removing a step container need (ping, version, create,
  start, wait, logs, attach, stop, kill, remove, inspect, image inspect/pull); exec, build, commit, archive
  uploads, volumes, networks, swarm, plugins and system calls are refused;
- checks the body of ``POST /containers/create``: the image must match an allowed pattern; no privileged mode,
  added capabilities, devices, host PID/IPC/UTS/user namespaces, unconfined security options, sysctls or
  cgroup parents; a GPU only through a device request for ``gpu``; host paths (binds and bind mounts) only
  under allowed folders, never the Docker socket, and volumes without driver options (the ``o=bind`` trick);
  only allowed networks;
- labels every container it creates (``ar.docker-guard=1`` and ``ar.docker-guard.instance=NAME``, its
  ``--instance``: the compose project) and acts on a container (inspect, logs, stop, remove) only when the
  engine says it carries both, so the guard cannot be used to read another container's environment or stop it,
  nor a container of another stack on the same engine.

Each refusal answers 403 with ``{"message": "docker-guard: ..."}`` (docker-py shows it as an ``APIError``) and
is logged. One request per connection (``Connection: close`` to the engine), so attach upgrades and streamed
logs are piped through as they are.

    action-recognition docker-guard --listen 0.0.0.0:2375 --engine unix:///var/run/docker.sock \\
        --allow-image 'action-recognition-worker:*' --allow-bind /srv/action-recognition --allow-network ar \\
        --instance ar
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger(__name__)

LABEL = "ar.docker-guard"
INSTANCE_LABEL = "ar.docker-guard.instance"
MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024
VERSION_PREFIX = re.compile(r"^/v\d+\.\d+(?=/)")
ID = r"(?P<id>[A-Za-z0-9][A-Za-z0-9_.-]{0,127})"
# (method, path pattern, needs a container made by the guard)
ROUTES: list[tuple[str, re.Pattern[str], bool]] = [
    (m, re.compile(p), own)
    for m, p, own in [
        ("GET", r"/_ping", False),
        ("HEAD", r"/_ping", False),
        ("GET", r"/version", False),
        ("GET", r"/info", False),
        ("GET", r"/containers/json", False),
        ("POST", r"/containers/create", False),
        ("GET", rf"/containers/{ID}/json", True),
        ("GET", rf"/containers/{ID}/logs", True),
        ("POST", rf"/containers/{ID}/(start|wait|stop|kill|attach)", True),
        ("DELETE", rf"/containers/{ID}", True),
        ("GET", r"/images/json", False),
        ("GET", r"/images/(?P<image>.+)/json", False),
        ("POST", r"/images/create", False),
    ]
]
HOST_NAMESPACES = ("PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode")
EMPTY_ONLY = ("CapAdd", "Devices", "Sysctls", "VolumesFrom", "Links", "ExtraHosts", "DeviceCgroupRules")


class Refused(Exception):
    """A request the guard will not pass on; the message says what and why."""


class NotFound(Exception):
    """The container does not exist: answered 404 like the engine (callers such as docker-py rely on it)."""


@dataclass(frozen=True)
class Policy:
    """What containers may look like. Patterns are shell globs (``fnmatch``); folders are absolute host
    paths."""

    images: tuple[str, ...] = ("action-recognition-worker:*",)
    bind_roots: tuple[str, ...] = ()
    networks: tuple[str, ...] = ("default", "bridge")
    read_only_binds: bool = True
    runtimes: tuple[str, ...] = ("", "runc", "nvidia")
    socket_paths: tuple[str, ...] = field(default=("/var/run/docker.sock", "/run/docker.sock"))
    instance: str = "default"  # the INSTANCE_LABEL of what this guard creates and may act on

    def image_allowed(self, image: str) -> bool:
        return any(fnmatch.fnmatchcase(image, pattern) for pattern in self.images)

    def check_create(self, body: dict[str, Any]) -> None:
        """Raise :class:`Refused` for anything in a container create request the steps never need."""
        image = str(body.get("Image") or "")
        if not self.image_allowed(image):
            raise Refused(f"image {image!r} is not allowed (allowed: {', '.join(self.images)})")
        host = body.get("HostConfig") or {}
        if not isinstance(host, dict):
            raise Refused("HostConfig must be an object")
        if host.get("Privileged"):
            raise Refused("privileged containers are refused")
        for key in EMPTY_ONLY:
            if host.get(key):
                raise Refused(f"HostConfig.{key} is refused ({host[key]!r})")
        for key in HOST_NAMESPACES:
            value = str(host.get(key) or "")
            if value == "host" or value.startswith("container:"):
                raise Refused(
                    f"HostConfig.{key}={value!r} is refused: it shares a namespace with the host or another "
                    "container"
                )
        for opt in host.get("SecurityOpt") or []:
            if "unconfined" in str(opt) or "disable" in str(opt):
                raise Refused(f"HostConfig.SecurityOpt {opt!r} is refused")
        for key in ("CgroupParent", "MaskedPaths", "ReadonlyPaths"):
            if host.get(key) is not None and host.get(key) != "":
                raise Refused(f"HostConfig.{key} is refused")
        if str(host.get("Runtime") or "") not in self.runtimes:
            raise Refused(f"runtime {host.get('Runtime')!r} is refused")
        for request in host.get("DeviceRequests") or []:
            caps = request.get("Capabilities") or []
            if (
                request.get("DeviceIDs")
                or request.get("Options")
                or caps not in ([["gpu"]], [["gpu", "compute", "utility"]])
            ):
                raise Refused(f"device request {request!r} is refused: only a plain GPU request is allowed")
        network = str(host.get("NetworkMode") or "default")
        if network not in self.networks:
            raise Refused(f"network {network!r} is not allowed (allowed: {', '.join(self.networks)})")
        for bind in host.get("Binds") or []:
            source, _, rest = str(bind).partition(":")
            _target, _, mode = rest.partition(":")
            if source.startswith("/"):
                self._check_host_path(source, read_only="ro" in mode.split(","), what=f"bind {bind!r}")
        for mount in host.get("Mounts") or []:
            kind = mount.get("Type", "volume")
            if kind == "bind":
                self._check_host_path(
                    str(mount.get("Source", "")), bool(mount.get("ReadOnly")), f"mount {mount!r}"
                )
            elif kind == "volume":
                driver = (mount.get("VolumeOptions") or {}).get("DriverConfig") or {}
                if driver.get("Options") or driver.get("Name") not in (None, "", "local"):
                    raise Refused(f"volume driver options are refused (they can bind host paths): {mount!r}")
            elif kind != "tmpfs":
                raise Refused(f"mount type {kind!r} is refused")

    def _check_host_path(self, source: str, read_only: bool, what: str) -> None:
        path = PurePosixPath(source)
        if ".." in path.parts or not path.is_absolute():
            raise Refused(f"{what}: host paths must be absolute without '..'")
        if any(path in (PurePosixPath(s), PurePosixPath(s).parent) for s in self.socket_paths):
            raise Refused(f"{what}: the Docker socket and its folder are never mounted")
        if not any(path == PurePosixPath(r) or PurePosixPath(r) in path.parents for r in self.bind_roots):
            roots = ", ".join(self.bind_roots) or "none"
            raise Refused(f"{what}: host path {source} is outside the allowed folders ({roots})")
        if any(path == PurePosixPath(s) or path in PurePosixPath(s).parents for s in self.socket_paths):
            raise Refused(f"{what}: a folder holding the Docker socket is never mounted")
        if self.read_only_binds and not read_only:
            raise Refused(f"{what}: host paths are mounted read-only only")


def route(method: str, path: str) -> tuple[bool, dict[str, str]]:
    """``(needs_own_container, groups)`` for an allowed call; :class:`Refused` for anything else."""
    bare = VERSION_PREFIX.sub("", path)
    for m, pattern, own in ROUTES:
        match = pattern.fullmatch(bare)
        if match and m == method:
            return own, {k: unquote(v) for k, v in match.groupdict().items()}
    raise Refused(f"{method} {bare} is not an allowed Docker API call")


def add_label(body: dict[str, Any], instance: str) -> dict[str, Any]:
    labels = dict(body.get("Labels") or {})
    labels[LABEL] = "1"
    labels[INSTANCE_LABEL] = instance
    return {**body, "Labels": labels}


# --- HTTP plumbing
# ----------------------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def encode(self) -> bytes:
        skip = {"connection", "keep-alive", "content-length", "proxy-connection"}
        upgrade = self.header("Upgrade") is not None
        lines = [f"{self.method} {self.target} {self.version}"]
        lines += [
            f"{k}: {v}"
            for k, v in self.headers
            if k.lower() not in skip or (upgrade and k.lower() == "connection")
        ]
        if self.body or self.method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(self.body)}")
        if not upgrade:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


async def read_request(reader: asyncio.StreamReader) -> Request:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise Refused("request head too large") from exc
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError as exc:
        raise Refused(f"bad request line {lines[0]!r}") from exc
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line)]
    request = Request(method.upper(), target, version, headers, b"")
    if request.header("Transfer-Encoding"):
        raise Refused("chunked request bodies are refused (no allowed call streams a body)")
    length = int(request.header("Content-Length") or 0)
    if length > MAX_BODY:
        raise Refused(f"request body of {length} bytes is over {MAX_BODY}")
    request.body = await reader.readexactly(length) if length else b""
    return request


@dataclass(frozen=True)
class Engine:
    """Where the real Docker engine listens: ``unix:///path`` or ``tcp://host:port``."""

    url: str

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            return await asyncio.open_unix_connection(parts.path or "/var/run/docker.sock", limit=MAX_HEAD)
        if parts.scheme == "tcp":
            return await asyncio.open_connection(parts.hostname, parts.port or 2375, limit=MAX_HEAD)
        raise ValueError(f"engine URL must be unix:// or tcp://, got {self.url!r}")

    async def get_json(self, path: str) -> tuple[int, Any]:
        reader, writer = await self.connect()
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if b"transfer-encoding: chunked" in head.lower():
            body = _dechunk(body)
        try:
            return status, json.loads(body or b"null")
        except ValueError:
            return status, None


def _dechunk(data: bytes) -> bytes:
    out, rest = bytearray(), data
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2 :]
    return bytes(out)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while chunk := await src.read(65536):
            dst.write(chunk)
            await dst.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        if dst.can_write_eof():
            with contextlib.suppress(OSError):
                dst.write_eof()


class Guard:
    def __init__(self, engine: Engine, policy: Policy) -> None:
        self.engine, self.policy = engine, policy
        self.refused = 0
        self.passed = 0

    async def check(self, request: Request) -> Request:
        parts = urlsplit(request.target)
        own, groups = route(request.method, parts.path)
        if own:
            status, info = await self.engine.get_json(f"/containers/{groups['id']}/json")
            if status == 404:
                raise NotFound(f"No such container: {groups['id']}")
            labels = ((info or {}).get("Config") or {}).get("Labels") or {}
            if labels.get(LABEL) != "1" or labels.get(INSTANCE_LABEL) != self.policy.instance:
                raise Refused(
                    f"container {groups['id']!r} was not created through the guard (instance "
                    f"{self.policy.instance!r})"
                )
        if "image" in groups and not self.policy.image_allowed(groups["image"]):
            raise Refused(f"image {groups['image']!r} is not allowed")
        if parts.path.endswith("/images/create"):
            query = parse_qs(parts.query)
            image = query.get("fromImage", [""])[0]
            tag = query.get("tag", ["latest"])[0]
            ref = image if ":" in image.rsplit("/", 1)[-1] or "@" in image else f"{image}:{tag}"
            if query.get("fromSrc") or not self.policy.image_allowed(ref):
                raise Refused(f"pulling {ref!r} is not allowed")
        if parts.path.endswith("/containers/create"):
            try:
                body = json.loads(request.body or b"{}")
            except ValueError as exc:
                raise Refused("the create body is not JSON") from exc
            if not isinstance(body, dict):
                raise Refused("the create body must be a JSON object")
            self.policy.check_create(body)
            request.body = json.dumps(add_label(body, self.policy.instance)).encode()
        return request

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            try:
                request = await self.check(await read_request(reader))
            except Refused as exc:
                self.refused += 1
                log.warning("docker-guard refused a call from %s: %s", peer, exc)
                await _answer(writer, 403, f"docker-guard: {exc}")
                return
            except NotFound as exc:
                await _answer(writer, 404, str(exc))
                return
            except (asyncio.IncompleteReadError, ValueError) as exc:
                await _answer(writer, 400, f"docker-guard: bad request: {exc}")
                return
            up_reader, up_writer = await self.engine.connect()
            self.passed += 1
            up_writer.write(request.encode())
            await up_writer.drain()
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            up_writer.close()
        except (ConnectionError, OSError) as exc:
            log.info("docker-guard: connection from %s ended: %s", peer, exc)
        finally:
            writer.close()


async def _answer(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    body = json.dumps({"message": message}).encode()
    reason = {400: "Bad Request", 403: "Forbidden", 404: "Not Found"}[status]
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()


async def serve(
    host: str, port: int, engine: Engine, policy: Policy, ready: asyncio.Event | None = None
) -> None:
    guard = Guard(engine, policy)
    server = await asyncio.start_server(guard.handle, host, port, limit=MAX_HEAD)
    log.info(
        "docker-guard on %s:%d -> %s; images %s; bind roots %s; networks %s",
        host,
        port,
        engine.url,
        policy.images,
        policy.bind_roots,
        policy.networks,
    )
    if ready is not None:
        ready.set()
    async with server:
        await server.serve_forever()
