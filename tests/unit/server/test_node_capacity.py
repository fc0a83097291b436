"""What a node agent says its host offers, and the options it refuses."""

from __future__ import annotations

import pytest

from stratus._exceptions import ConfigurationError
from stratus.protocol.messages import NodeCapacity
from stratus.server.node import NodeAgent, detect_capacity, parse_gpus


def test_given_figures_win_over_detection() -> None:
    assert detect_capacity(cores=3, memory_mb=700, gpus=2) == NodeCapacity(3, 700, 2, ["0", "1"])
    assert detect_capacity(cores=1, memory_mb=1, gpus=["3", "5"]).gpu_ids == ["3", "5"]


@pytest.mark.parametrize(
    ("text", "ids"), [("0", []), ("2", ["0", "1"]), ("0,1,2", ["0", "1", "2"]), ("3,", ["3"])]
)
def test_gpus_option_is_a_count_or_ids(text: str, ids: list[str]) -> None:
    assert parse_gpus(text) == ids


@pytest.mark.parametrize("text", ["", "a", "1,1", "0 1"])
def test_a_bad_gpus_option_is_a_configuration_error(text: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_gpus(text)


def test_detected_figures_are_positive() -> None:
    capacity = detect_capacity(gpus=0)
    assert capacity.cores >= 1 and capacity.memory_mb > 0 and capacity.gpus == 0


@pytest.mark.parametrize(
    ("visible", "ids"), [("0,1", ["0", "1"]), ("", []), ("-1", []), ("3", ["3"])]
)
def test_gpus_come_from_cuda_visible_devices(
    monkeypatch: pytest.MonkeyPatch, visible: str, ids: list[str]
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    capacity = detect_capacity()
    assert capacity.gpu_ids == ids and capacity.gpus == len(ids)


@pytest.mark.parametrize(
    ("join", "advertise", "capacity"),
    [
        ("10.0.0.1:7070", "", NodeCapacity(1, 512)),  # no scheme
        ("tcp://10.0.0.1:7070", "0.0.0.0", NodeCapacity(1, 512)),  # not a host to dial
        ("tcp://10.0.0.1:7070", "", NodeCapacity(-1, 512)),
    ],
)
def test_bad_options_are_configuration_errors(
    join: str, advertise: str, capacity: NodeCapacity
) -> None:
    with pytest.raises(ConfigurationError):
        NodeAgent(
            join,
            b"k" * 32,
            "/tmp/unused",
            node_id="n",
            capacity=capacity,
            run_executor=lambda config, executor_id, group: None,
            advertise=advertise,
        )
