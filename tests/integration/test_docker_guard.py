"""The Docker guard against the real Docker engine: what a step needs goes through, everything else is
refused.

Each probe is a call an attacker holding Airflow's Docker URL would try; it must end in a 403 from the guard
and create nothing on the engine.
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from action_recognition.dockerguard import INSTANCE_LABEL, LABEL, Policy, Refused, route
from tests.support.airflow import ROOT
from tests.support.docker import containers, start_guard
from tests.support.reliability import Reliability

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def guard(worker_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import docker

    allowed = tmp_path_factory.mktemp("allowed")
    with start_guard(worker_image, bind_roots=[str(ROOT), str(allowed)]) as url:
        client = docker.DockerClient(base_url=url, timeout=60)
        client.allowed_folder = str(allowed)  # type: ignore[attr-defined]
        yield client
        client.close()


def test_a_step_container_runs_through_the_guard(guard: Any, worker_image: str) -> None:
    assert guard.ping()
    out = guard.containers.run(
        worker_image,
        ["sh", "-c", "echo step-ran"],
        remove=True,
        network_mode="host",
        volumes={str(ROOT): {"bind": "/opt/src", "mode": "ro"}},
    )
    assert out.strip() == b"step-ran"
    # streamed attach (what DockerOperator reads logs with) through the guard
    container = guard.containers.create(worker_image, ["sh", "-c", "echo one; echo two"], network_mode="host")
    try:
        stream = guard.api.attach(container.id, stdout=True, stderr=True, stream=True)
        container.start()
        assert b"".join(stream).split() == [b"one", b"two"]
        assert container.wait()["StatusCode"] == 0
        assert container.labels.get(LABEL) == "1", "the guard labels what it creates"
        assert container.labels.get(INSTANCE_LABEL) == "default", "with its instance (the stack's name)"
    finally:
        container.remove(force=True)


def _probes(guard: Any, worker_image: str) -> dict[str, tuple[Callable[[], object], str]]:
    from docker.types import DriverConfig, Mount

    def run(**kw: Any) -> Callable[[], object]:
        image, network = kw.pop("image", worker_image), kw.pop("network_mode", "host")
        return lambda: guard.containers.create(image, ["true"], network_mode=network, **kw)

    folder = guard.allowed_folder
    return {
        "privileged container": (run(privileged=True), "privileged"),
        "bind mount of /": (
            run(volumes={"/": {"bind": "/host", "mode": "ro"}}),
            "outside the allowed folders",
        ),
        "bind mount of the Docker socket": (
            run(volumes={"/var/run/docker.sock": {"bind": "/s", "mode": "ro"}}),
            "Docker socket",
        ),
        "bind mount of /etc (Mounts API)": (
            run(mounts=[Mount("/x", "/etc", type="bind", read_only=True)]),
            "outside the allowed folders",
        ),
        "writable bind of an allowed folder": (
            run(volumes={folder: {"bind": "/data", "mode": "rw"}}),
            "read-only",
        ),
        "bind with .. out of an allowed folder": (
            run(volumes={f"{folder}/../../etc": {"bind": "/x", "mode": "ro"}}),
            "without '..'",
        ),
        "volume that binds / through driver options": (
            run(
                mounts=[
                    Mount(
                        "/x",
                        "evil",
                        type="volume",
                        driver_config=DriverConfig("local", {"type": "none", "o": "bind", "device": "/"}),
                    )
                ]
            ),
            "driver options",
        ),
        "added capability SYS_ADMIN": (run(cap_add=["SYS_ADMIN"]), "CapAdd"),
        "host device": (run(devices=["/dev/mem:/dev/mem:rwm"]), "Devices"),
        "host PID namespace": (run(pid_mode="host"), "PidMode"),
        "host IPC namespace": (run(ipc_mode="host"), "IpcMode"),
        "host user namespace": (run(userns_mode="host"), "UsernsMode"),
        "seccomp unconfined": (run(security_opt=["seccomp=unconfined"]), "SecurityOpt"),
        "apparmor unconfined": (run(security_opt=["apparmor=unconfined"]), "SecurityOpt"),
        "sysctl": (run(sysctls={"net.ipv4.ip_forward": "1"}), "Sysctls"),
        "cgroup parent": (run(cgroup_parent="/"), "CgroupParent"),
        "another image": (run(image="ar-debian-base:bookworm"), "not allowed"),
        "a network not allowed": (run(network_mode="bridge"), "network 'bridge' is not allowed"),
        "pull of an image not allowed": (lambda: guard.images.pull("alpine", tag="3"), "not allowed"),
        "image build": (lambda: guard.images.build(fileobj=io.BytesIO(b"FROM scratch\n")), "not an allowed"),
        "volume create": (lambda: guard.volumes.create("ar-probe"), "not an allowed"),
        "network create": (lambda: guard.networks.create("ar-probe"), "not an allowed"),
        "system prune": (lambda: guard.containers.prune(), "not an allowed"),
    }


PROBES = [
    "privileged container",
    "bind mount of /",
    "bind mount of the Docker socket",
    "bind mount of /etc (Mounts API)",
    "writable bind of an allowed folder",
    "bind with .. out of an allowed folder",
    "volume that binds / through driver options",
    "added capability SYS_ADMIN",
    "host device",
    "host PID namespace",
    "host IPC namespace",
    "host user namespace",
    "seccomp unconfined",
    "apparmor unconfined",
    "sysctl",
    "cgroup parent",
    "another image",
    "a network not allowed",
    "pull of an image not allowed",
    "image build",
    "volume create",
    "network create",
    "system prune",
]


@pytest.mark.parametrize("probe", PROBES)
def test_the_guard_refuses(probe: str, guard: Any, worker_image: str, reliability: Reliability) -> None:
    import docker

    call, words = _probes(guard, worker_image)[probe]
    before = containers("")
    with reliability.probe(f"docker: {probe}"):
        with pytest.raises(docker.errors.APIError) as err:
            call()
        assert err.value.status_code == 403, err.value
        assert "docker-guard" in str(err.value) and words in str(err.value), str(err.value)
        assert containers("") == before, "a refused call created nothing"


def test_exec_and_foreign_containers_are_refused(
    guard: Any, worker_image: str, reliability: Reliability
) -> None:
    """A container the guard made cannot be exec'ed into; one it did not make cannot even be inspected."""
    import docker

    mine = guard.containers.run(worker_image, ["sleep", "60"], detach=True, network_mode="host")
    name, other = "ar-guard-foreign", "ar-guard-other-stack"
    subprocess.run(["docker", "rm", "-f", name, other], capture_output=True)
    subprocess.run(
        ["docker", "create", "--name", name, "-e", "SECRET=x", worker_image, "true"],
        check=True,
        capture_output=True,
    )
    # made by another stack's guard on the same engine: labelled, but with another instance
    labels = ["--label", f"{LABEL}=1", "--label", f"{INSTANCE_LABEL}=another-stack"]
    subprocess.run(
        ["docker", "create", "--name", other, *labels, worker_image, "true"], check=True, capture_output=True
    )
    try:
        with (
            reliability.probe("docker: exec into a step container"),
            pytest.raises(docker.errors.APIError, match="not an allowed Docker API call"),
        ):
            mine.exec_run(["id"])
        for what, call in {
            "inspect a container the guard did not make (its environment)": lambda: guard.containers.get(
                name
            ),
            "remove a container the guard did not make": lambda: guard.api.remove_container(name, force=True),
            "logs of a container the guard did not make": lambda: guard.api.logs(name),
            "stop a container another stack's guard made": lambda: guard.api.stop(other),
        }.items():
            with (
                reliability.probe(f"docker: {what}"),
                pytest.raises(docker.errors.APIError, match="not created through the guard"),
            ):
                call()
        assert name in containers("") and other in containers("")
    finally:
        mine.remove(force=True)
        subprocess.run(["docker", "rm", "-f", name, other], capture_output=True)


def test_policy_and_routes_without_an_engine() -> None:
    policy = Policy(images=("w:*",), bind_roots=("/srv/ar",), networks=("ar",))
    policy.check_create(
        {
            "Image": "w:1",
            "HostConfig": {
                "NetworkMode": "ar",
                "Binds": ["/srv/ar/data:/d:ro"],
                "DeviceRequests": [{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}],
            },
        }
    )
    for body, words in [
        ({"Image": "w:1", "HostConfig": {"NetworkMode": "host"}}, "network 'host'"),
        ({"Image": "w:1", "HostConfig": {"NetworkMode": "ar", "Binds": ["/srv/arx:/d:ro"]}}, "outside"),
        (
            {
                "Image": "w:1",
                "HostConfig": {
                    "NetworkMode": "ar",
                    "DeviceRequests": [
                        {"Driver": "", "DeviceIDs": ["0"], "Capabilities": [["gpu"]], "Options": {"x": "y"}}
                    ],
                },
            },
            "device request",
        ),
        ({"Image": "w:1", "HostConfig": {"NetworkMode": "ar", "Runtime": "kata-fc"}}, "runtime"),
        ({"Image": "w:1", "HostConfig": {"NetworkMode": "ar", "PidMode": "container:abc"}}, "PidMode"),
    ]:
        with pytest.raises(Refused, match=words):
            policy.check_create(body)
    assert route("GET", "/v1.44/containers/abc/json") == (True, {"id": "abc"})
    assert route("GET", "/images/ghcr.io/x/worker:1/json")[1] == {"image": "ghcr.io/x/worker:1"}
    for method, path in [
        ("POST", "/containers/abc/exec"),
        ("POST", "/build"),
        ("PUT", "/containers/abc/archive"),
        ("POST", "/containers/abc/update"),
        ("GET", "/containers/../../json"),
    ]:
        with pytest.raises(Refused):
            route(method, path)
