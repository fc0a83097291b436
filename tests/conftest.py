"""Fixtures shared by the integration and system tests: real clusters, real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import redis_cluster
import redis_server
import stratus


@pytest.fixture(autouse=True)
def user_config_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A config home of the test's own: ``stratus up`` never writes the user's real
    ``~/.config/stratus/config.toml``, and commands never read it."""
    home = tmp_path_factory.mktemp("config-home")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.delenv("STRATUS_ADDRESS", raising=False)
    return home


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stratus.App]:
    """One embedded cluster (two executors) shared by the tests of a module."""
    with stratus.connect(data_dir=tmp_path_factory.mktemp("stratus"), executors=2) as app:
        yield app


@pytest.fixture
def fresh_app(tmp_path: Path) -> Iterator[stratus.App]:
    """A cluster of its own, for tests that kill or break things."""
    with stratus.connect(data_dir=tmp_path / "stratus", executors=2) as app:
        yield app


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for the session (loopback, no persistence): its URL."""
    with redis_server.serve(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Redis Cluster for the session (3 masters + 3 replicas): a node's URL, also
    in ``STRATUS_TEST_REDIS_CLUSTER_URL`` for worker processes."""
    with (
        redis_cluster.serve(tmp_path_factory.mktemp("redis-cluster")) as cluster,
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setenv(redis_cluster.URL_VARIABLE, cluster.url)
        yield cluster.url


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``one_sequence`` assert what only a store with one store-wide version
    sequence can promise: they are not made for the sharded Redis Cluster backend (not
    skipped: a skip would read as a test that could not run)."""
    kept, dropped = [], []
    for item in items:
        kind = getattr(item, "callspec", None) and item.callspec.params.get("kind")
        if item.get_closest_marker("one_sequence") and kind == "redis-cluster-sharded":
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
