"""deploy/kubernetes/ validated against the schemas of a pinned Kubernetes version, with
``kubernetes-validate`` (its schemas ship in the package: no cluster, no network), and
checked for what the schemas cannot see: selectors that match, the agents joining the
coordinator's Service, the key reaching processes only through a Secret."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")  # the dev extra has it

pytestmark = pytest.mark.system

KUBERNETES = "1.33.0"  # the oldest release these manifests promise to run on
MANIFESTS = sorted((Path(__file__).parents[2] / "deploy" / "kubernetes").glob("*.yaml"))


def _documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in MANIFESTS:
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append(
                    (f"{path.name}:{document['kind']}/{document['metadata']['name']}", document)
                )
    return found


DOCUMENTS = _documents()
BY_KIND = {(d["kind"], d["metadata"]["name"]): d for _, d in DOCUMENTS}


def test_every_manifest_is_there() -> None:
    assert {(k, n) for k, n in BY_KIND} == {
        ("Secret", "stratus-key"),
        ("ConfigMap", "stratus-config"),
        ("Service", "stratus-redis"),
        ("StatefulSet", "stratus-redis"),
        ("Service", "stratus-coordinator"),
        ("Deployment", "stratus-coordinator"),
        ("DaemonSet", "stratus-node"),
    }


@pytest.mark.parametrize("name, document", DOCUMENTS, ids=[name for name, _ in DOCUMENTS])
def test_valid_for_the_pinned_kubernetes(name: str, document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_the_validator_catches_a_misspelt_field() -> None:
    broken = copy.deepcopy(BY_KIND["DaemonSet", "stratus-node"])
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["resource"] = container.pop("resources")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_workloads_select_their_own_pods_and_services_reach_them() -> None:
    for (kind, name), document in BY_KIND.items():
        if kind in ("Deployment", "StatefulSet", "DaemonSet"):
            labels = document["spec"]["template"]["metadata"]["labels"]
            assert document["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
            service = BY_KIND.get(("Service", name))
            if service is not None:
                assert service["spec"]["selector"].items() <= labels.items(), name
                ports = {p["containerPort"] for p in _container(document).get("ports", [])}
                assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports, name


def test_agents_join_the_coordinator_service_and_the_gateway_is_one_of_its_ports() -> None:
    service = BY_KIND["Service", "stratus-coordinator"]
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    node_args = _container(BY_KIND["DaemonSet", "stratus-node"])["args"]
    assert f"--join=tcp://stratus-coordinator:{ports['stratus']}" in node_args
    coordinator_args = _container(BY_KIND["Deployment", "stratus-coordinator"])["args"]
    assert f"--http=0.0.0.0:{ports['http']}" in coordinator_args
    assert f"--listen=tcp://0.0.0.0:{ports['stratus']}" in coordinator_args


def test_the_key_comes_from_the_secret_never_a_command_line() -> None:
    node = _container(BY_KIND["DaemonSet", "stratus-node"])
    key_env = {e["name"]: e.get("valueFrom", {}) for e in node["env"]}["STRATUS_KEY"]
    assert key_env == {"secretKeyRef": {"name": "stratus-key", "key": "key"}}
    coordinator = BY_KIND["Deployment", "stratus-coordinator"]["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"] for v in coordinator["volumes"] if "secret" in v}
    assert secrets["key"]["secretName"] == "stratus-key"
    for _, document in DOCUMENTS:
        if "template" in document.get("spec", {}):
            text = " ".join(
                _container(document).get("command", []) + _container(document).get("args", [])
            )
            assert "key" not in text.replace("--data-dir", ""), text


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]
