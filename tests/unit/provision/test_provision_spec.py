"""A node agent's command line and options, as every provisioner builds them."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from stratus import _exceptions as exc
from stratus.provision import AgentSpec
from stratus.provision.local import LocalProvisioner


def test_the_command_runs_stratus_node_with_the_options_given() -> None:
    spec = AgentSpec("tcp://10.0.0.5:7070", "n1", "/d/n1", cores=2, memory_mb=512, gpus=0)
    assert spec.command() == [
        sys.executable, "-m", "stratus.cli", "node", "--join", "tcp://10.0.0.5:7070",
        "--node-id", "n1", "--data-dir", "/d/n1", "--log-level", "INFO",
        "--cores", "2", "--memory-mb", "512", "--gpus", "0",
    ]  # fmt: skip


def test_what_is_not_given_is_left_to_the_agent_to_detect() -> None:
    command = AgentSpec("tcp://h:1", "n1", "/d").command()
    assert "--cores" not in command and "--memory-mb" not in command and "--gpus" not in command


@pytest.mark.parametrize(
    "join, node_id, cores, memory_mb",
    [("10.0.0.5:7070", "n1", 0, 0), ("tcp://h:1", "", 0, 0), ("tcp://h:1", "n1", -1, 0)],
)
def test_bad_options_are_a_configuration_error(
    join: str, node_id: str, cores: int, memory_mb: int
) -> None:
    with pytest.raises(exc.ConfigurationError):
        AgentSpec(join, node_id, "/d", cores=cores, memory_mb=memory_mb)


def test_a_local_provisioner_checks_its_options_before_starting_anything() -> None:
    with pytest.raises(exc.ConfigurationError):
        LocalProvisioner("nowhere", b"k" * 32, "/tmp/x", nodes=1)
    with pytest.raises(exc.ConfigurationError):
        LocalProvisioner("tcp://h:1", b"k" * 32, "/tmp/x", nodes=-1)


def test_an_unreachable_ray_address_fails_at_once_and_a_malformed_one_is_refused() -> None:
    pytest.importorskip("ray")
    from stratus.provision.ray_nodes import RayProvisioner

    with socket.socket() as unused:  # a port nobody listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(exc.ConnectionFailed, match="no Ray cluster"):
        RayProvisioner("tcp://127.0.0.1:7070", b"k" * 32, address=f"127.0.0.1:{port}")
    assert time.monotonic() - started < 30  # ray.init alone would retry for minutes
    with pytest.raises(exc.ConfigurationError):
        RayProvisioner("tcp://127.0.0.1:7070", b"k" * 32, address="ray://nowhere")
    with pytest.raises(exc.ConfigurationError):
        RayProvisioner("nowhere", b"k" * 32, address=f"127.0.0.1:{port}")
