"""Store URLs: what ``check_url`` accepts and refuses before any process starts with one
(the ``redis-cluster://`` form; opening one is tested on a real cluster)."""

from __future__ import annotations

import pytest

from stratus._exceptions import ConfigurationError
from stratus.kv.open import _cluster, check_url


def test_a_redis_cluster_url_names_its_nodes_and_settings() -> None:
    nodes, settings = _cluster(
        "redis-cluster",
        "//alice:pw@10.0.0.1:7000,10.0.0.2:7001",
        {"namespace": "prod", "shards": "16", "wait_replicas": "1", "lock_timeout": "2.5"},
    )
    assert nodes == ["redis://alice:pw@10.0.0.1:7000/0", "redis://alice:pw@10.0.0.2:7001/0"]
    assert settings == {"namespace": "prod", "shards": 16, "wait_replicas": 1, "lock_timeout": 2.5}
    assert _cluster("rediss-cluster", "//h:1", {})[0] == ["rediss://h:1/0"]
    check_url("redis-cluster://127.0.0.1:7000?shards=4&wait_replicas=1&wait_timeout=0.5")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis-cluster:127.0.0.1:7000", "unknown store"),
        ("redis-cluster://127.0.0.1", "HOST:PORT"),
        ("redis-cluster://127.0.0.1:7000,:7001", "HOST:PORT"),
        ("redis-cluster://127.0.0.1:99999", "HOST:PORT"),
        ("redis-cluster://h:1?shards=0", "shards must be between"),
        ("redis-cluster://h:1?shards=many", "not a number"),
        ("redis-cluster://h:1?wait_replicas=-1", "wait_replicas"),
        ("redis-cluster://h:1?lock_timeout=0", "lock_timeout"),
        ("redis-cluster://h:1?db=3", "unknown option 'db'"),
    ],
)
def test_bad_redis_cluster_urls_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        check_url(url)
