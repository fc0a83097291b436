"""Parsing of ``tcp://`` and ``unix:`` socket addresses."""

from __future__ import annotations

import socket

import pytest

from stratus._exceptions import ConfigurationError
from stratus.transport.addresses import (
    DEFAULT_PORT,
    advertised,
    check_host,
    is_local,
    parse,
    routable_host,
    tcp,
)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("tcp://127.0.0.1:7070", (socket.AF_INET, ("127.0.0.1", 7070))),
        ("tcp://example.com:80", (socket.AF_INET, ("example.com", 80))),
        ("tcp://0.0.0.0:0", (socket.AF_INET, ("0.0.0.0", 0))),
        ("tcp://host:65535", (socket.AF_INET, ("host", 65535))),
        ("tcp://[::1]:9000", (socket.AF_INET6, ("::1", 9000))),
        ("tcp://localhost", (socket.AF_INET, ("localhost", DEFAULT_PORT))),
    ],
)
def test_parse_tcp(address: str, expected: tuple[int, tuple[str, int]]) -> None:
    assert parse(address) == expected


def test_parse_unix_abstract_name_gets_a_leading_nul() -> None:
    assert parse("unix:@stratus-c1-coordinator") == (socket.AF_UNIX, "\0stratus-c1-coordinator")


def test_parse_unix_path() -> None:
    assert parse("unix:/run/stratus.sock") == (socket.AF_UNIX, "/run/stratus.sock")


@pytest.mark.parametrize(
    "address",
    [
        "",
        "localhost:7070",
        "http://localhost:80",
        "udp://host:1",
        "unix:",
        "tcp://",
        "tcp://:7070",
        "tcp://host:",
        "tcp://host:port",
        "tcp://host:65536",
        "tcp://host:-1",
        "tcp://[]:80",
    ],
)
def test_parse_refuses_malformed_addresses(address: str) -> None:
    with pytest.raises(ConfigurationError):
        parse(address)


def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse("nonsense")


def test_parse_refuses_an_empty_abstract_name() -> None:
    with pytest.raises(ConfigurationError):
        parse("unix:@")


def test_parse_bracketed_ipv6_without_port_uses_the_default_port() -> None:
    assert parse("tcp://[::1]") == (socket.AF_INET6, ("::1", DEFAULT_PORT))


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("unix:@x", True),
        ("tcp://127.0.0.1:1", True),
        ("tcp://127.1.2.3:1", True),
        ("tcp://localhost:1", True),
        ("tcp://[::1]:1", True),
        ("tcp://10.0.0.1:1", False),
        ("tcp://0.0.0.0:1", False),
    ],
)
def test_is_local(address: str, local: bool) -> None:
    assert is_local(address) is local


@pytest.mark.parametrize("bound", ["tcp://0.0.0.0:7071", "tcp://[::]:7071"])
def test_a_wildcard_listener_advertises_a_routable_address_of_this_host(bound: str) -> None:
    family, (host, port) = parse(advertised(bound))  # type: ignore[misc]
    assert host not in ("0.0.0.0", "::") and port == 7071
    assert host == routable_host(family)


def test_a_listener_on_a_host_advertises_that_host() -> None:
    assert advertised("tcp://10.1.2.3:7071") == "tcp://10.1.2.3:7071"
    assert advertised("unix:@stratus-x") == "unix:@stratus-x"


@pytest.mark.parametrize(
    ("advertise", "expected"),
    [
        ("node7.example.com", "tcp://node7.example.com:7071"),
        ("tcp://10.9.8.7", "tcp://10.9.8.7:7071"),
        ("[fd00::5]", "tcp://[fd00::5]:7071"),
    ],
)
def test_advertise_replaces_the_bound_host(advertise: str, expected: str) -> None:
    assert advertised("tcp://0.0.0.0:7071", advertise) == expected


@pytest.mark.parametrize("host", ["", "0.0.0.0", "::", "10.0.0.1:80", "a/b", "tcp://"])
def test_advertising_a_non_host_is_a_configuration_error(host: str) -> None:
    with pytest.raises(ConfigurationError):
        check_host(host)


def test_tcp_brackets_ipv6_so_that_parse_reads_it_back() -> None:
    assert parse(tcp("::1", 9)) == (socket.AF_INET6, ("::1", 9))
