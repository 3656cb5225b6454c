"""The deployment files hold together: the Dockerfile, deploy/compose.yaml, the kustomize base and the
Grafana dashboard, read as a user's tools would read them (no Docker engine or cluster runs in CI).

Schemas check shapes (make lint-deploy runs the same validators from the command line); these tests check
what schemas cannot: that the pieces refer to each other correctly (a Service selects pods that exist, a
PodDisruptionBudget covers each Deployment, the gateways probe the routes they serve, the credentials come
from the Secret, the compose gateways know both cores) and that the kustomization lists every manifest.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.support.promql_names import exposed_names, metric_names

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.37.0"
IMAGE_UID = 10001
SECRET_VARIABLES = {"PERSEUS_DATABASE_URL", "PERSEUS_REDIS_URL", "PERSEUS_SERVICE_TOKEN"}


# --- Dockerfile -----------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_is_multi_stage_non_root_with_one_entrypoint_for_every_process() -> None:
    instructions = dockerfile_instructions()
    stages = [args for op, args in instructions if op == "FROM"]
    assert len(stages) >= 2 and stages[-1].endswith("AS runtime")
    final = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    last = {op: args for op, args in final}
    assert json.loads(last["ENTRYPOINT"]) == ["perseus"]
    assert json.loads(last["CMD"]) == ["core"]
    assert last["USER"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert "healthcheck.py" in last["HEALTHCHECK"]
    assert any(op == "COPY" and "--from=build" in args for op, args in final)


def test_dockerignore_lets_in_every_path_the_dockerfile_copies() -> None:
    allowed = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line[:1] == "!"]
    sources = []
    for op, args in dockerfile_instructions():
        if op == "COPY" and "--from=" not in args:
            sources.extend(part.rstrip("/") for part in shlex.split(args)[:-1])
    assert sources
    for source in sources:
        assert any(source == a or source.startswith(a + "/") for a in allowed), source
        assert (ROOT / source).exists(), source


def healthcheck_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", DEPLOY / "docker" / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("args", "pid1", "expected"),
    [
        (["rest"], [], "rest"),
        ([], ["/opt/perseus/bin/python", "/opt/perseus/bin/perseus", "ws"], "ws"),
        ([], ["/sbin/docker-init", "--", "perseus", "core"], "core"),
        ([], ["/opt/perseus/bin/perseus", "migrate", "--status"], "migrate"),
        ([], ["/bin/sh"], None),
        ([], ["perseus", "nonsense"], None),
    ],
)
def test_healthcheck_finds_the_command_it_checks(args: list[str], pid1: list[str], expected: str | None) -> None:
    assert healthcheck_module().command_of(args, pid1) == expected


@pytest.mark.parametrize(
    ("listen", "target"),
    [("0.0.0.0:8000", "127.0.0.1:8000"), ("[::]:50051", "[::1]:50051"), ("10.0.0.5:8001", "10.0.0.5:8001")],
)
def test_healthcheck_probes_wildcard_addresses_on_loopback(listen: str, target: str) -> None:
    assert healthcheck_module().probe_target(listen) == target


# --- compose --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())  # resolves << merge keys
    return loaded


def test_compose_file_matches_the_compose_specification_schema(compose: dict[str, Any]) -> None:
    """The Compose specification's own JSON schema, as check-jsonschema vendors it (make lint-deploy)."""
    schema = json.loads((files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_class(schema).iter_errors(compose), key=str)
    assert not errors, [e.message for e in errors]
    broken = {**compose, "services": {"x": {"image": "a", "restart": ["not", "a", "string"]}}}
    assert list(validator_class(schema).iter_errors(broken))  # the check can fail


def perseus_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if str(s.get("image", "")).startswith("perseus:")}


def test_compose_runs_the_multi_instance_topology(compose: dict[str, Any]) -> None:
    services = compose["services"]
    nodes = [name for name in services if re.fullmatch(r"valkey-\d", name)]
    assert len(nodes) == 6
    for name in nodes:
        assert "--cluster-enabled yes" in " ".join(services[name]["command"])
    assert set(services["valkey-cluster-create"]["depends_on"]) == set(nodes)
    assert services["valkey-cluster-create"]["restart"] == "no"
    assert "pg_basebackup" in (DEPLOY / "compose" / "postgres-replica.sh").read_text()
    assert services["postgres-replica"]["depends_on"] == {"postgres-primary": {"condition": "service_healthy"}}

    perseus = perseus_services(compose)
    commands = sorted(s["command"][0] for s in perseus.values())
    assert commands == ["core", "core", "migrate", "rest", "rest", "ws", "ws"]
    cores = {name: s for name, s in perseus.items() if s["command"] == ["core"]}
    assert sorted(s["environment"]["PERSEUS_MODE"] for s in cores.values()) == ["exchange", "pw-host"]
    for name, service in perseus.items():
        env = service["environment"]
        assert (
            env["PERSEUS_DATABASE_URL"].startswith("postgresql://")
            and "@postgres-primary:" in env["PERSEUS_DATABASE_URL"]
        )
        if service["command"][0] in ("core", "rest", "ws"):  # the cores listen on 0.0.0.0: a token is required
            assert env["PERSEUS_SERVICE_TOKEN"].startswith("${PERSEUS_SERVICE_TOKEN:-"), name
        if service["command"][0] in ("rest", "ws"):
            targets = {item.split(":")[0] for item in env["PERSEUS_CORE_ADDR"].split(",")}
            assert targets == set(cores), name
            assert service["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}


def test_compose_references_resolve(compose: dict[str, Any]) -> None:
    services = compose["services"]
    volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).is_file(), (name, source)
            else:
                assert source in volumes, (name, source)


# --- Kubernetes -----------------------------------------------------------------------------------------


def manifests() -> Iterator[tuple[str, dict[str, Any]]]:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        for document in yaml.safe_load_all((KUBE / name).read_text()):
            if document:
                yield name, document


def objects(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in manifests() if doc["kind"] == kind}


def test_kustomization_lists_every_manifest_and_only_those() -> None:
    listed = yaml.safe_load((KUBE / "kustomization.yaml").read_text())["resources"]
    present = sorted(p.name for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == present
    assert len(listed) == len(set(listed))


def test_every_manifest_validates_against_the_kubernetes_schemas() -> None:
    documents = list(manifests())
    assert len(documents) >= 12
    for _, document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)  # raises ValidationError
    broken = {**objects("Service")["perseus-rest"], "spec": {"ports": [{"port": "eighty"}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return list(deployment["spec"]["template"]["spec"]["containers"])


def test_gateways_probe_livez_and_readyz_on_the_port_they_listen_on() -> None:
    deployments = objects("Deployment")
    for name, listen_var in (("perseus-rest", "PERSEUS_REST_ADDR"), ("perseus-ws", "PERSEUS_WS_ADDR")):
        [container] = containers(deployments[name])
        env = {e["name"]: e.get("value") for e in container["env"]}
        port = int(env[listen_var].rpartition(":")[2])
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": port}
        assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert env["PERSEUS_CORE_ADDR"] == "dns:///perseus-core:50051"
        token = {e["name"]: e for e in container["env"]}["PERSEUS_SERVICE_TOKEN"]  # sent to the cores
        assert token["valueFrom"]["secretKeyRef"] == {"name": "perseus-credentials", "key": "PERSEUS_SERVICE_TOKEN"}


def test_cores_use_grpc_probes_and_take_their_credentials_from_the_secret() -> None:
    cores = {n: d for n, d in objects("Deployment").items() if n.startswith("perseus-core-")}
    modes = set()
    for deployment in cores.values():
        [container] = containers(deployment)
        env = {e["name"]: e for e in container["env"]}
        modes.add(env["PERSEUS_MODE"]["value"])
        port = int(env["PERSEUS_CORE_ADDR"]["value"].rpartition(":")[2])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["grpc"]["port"] == port
        for variable in SECRET_VARIABLES:
            assert "value" not in env[variable]
            assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": "perseus-credentials", "key": variable}
    assert modes == {"exchange", "pw-host"}
    [job_container] = objects("Job")["perseus-migrate"]["spec"]["template"]["spec"]["containers"]
    assert job_container["args"] == ["migrate"]
    assert job_container["env"][0]["valueFrom"]["secretKeyRef"]["key"] == "PERSEUS_DATABASE_URL"


def test_no_store_url_is_written_into_a_manifest() -> None:
    for name, document in manifests():
        text = json.dumps(document)
        assert "postgresql://" not in text and "redis://" not in text, name


def test_every_pod_runs_as_the_images_user_with_requests_and_a_memory_limit() -> None:
    pods = [d["spec"]["template"] for d in objects("Deployment").values()]
    pods.append(objects("Job")["perseus-migrate"]["spec"]["template"])
    for pod in pods:
        security = pod["spec"]["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == IMAGE_UID
        for container in pod["spec"]["containers"]:
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            assert "memory" in container["resources"]["limits"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_services_and_disruption_budgets_select_the_pods_they_mean() -> None:
    deployments = objects("Deployment")
    budgets = objects("PodDisruptionBudget")
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets.values() if selects(b["spec"]["selector"]["matchLabels"], labels)]
        assert len(covering) == 1, name
        assert covering[0]["spec"]["minAvailable"] < deployment["spec"]["replicas"], name
    for name, service in objects("Service").items():
        selected = [
            d
            for d in deployments.values()
            if selects(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        ]
        assert selected, name
        container_ports = {p["name"] for d in selected for c in containers(d) for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports, name
    assert objects("Service")["perseus-core"]["spec"]["clusterIP"] == "None"  # dns:/// sees every core


# --- Grafana ----------------------------------------------------------------------------------------------


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "perseus.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboard_covers_what_operators_watch() -> None:
    queried = {name for expr in dashboard_exprs() for name in metric_names(expr)}
    assert {
        "perseus_http_requests_total",
        "perseus_http_request_duration_seconds_bucket",
        "perseus_ws_connections",
        "perseus_ws_skipped_events_total",
        "perseus_ws_event_lag_seconds_sum",
        "perseus_ws_event_lag_seconds_max",
        "perseus_grpc_requests_total",
        "perseus_task_restarts_total",
        "perseus_degraded_tasks",
        "perseus_rest_ratelimit_local_fallbacks_total",
    } <= queried
    assert any("IngestPrices" in expr for expr in dashboard_exprs())


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (route) (rate(perseus_http_requests_total{process="rest"}[5m]))', {"perseus_http_requests_total"}),
        (
            'histogram_quantile(0.99, sum by (le, route) (rate(x_bucket{job=~"$job", a="b c"}[$__rate_interval])))',
            {"x_bucket"},
        ),
        ("rate(a_sum[5m]) / rate(a_count[5m]) > 0.5", {"a_sum", "a_count"}),
        ("sum(rate(foo[1h30m] offset 5m)) without (instance) or on (job) vector(0)", {"foo"}),
        ("max(up2) by (le) * 1e3", {"up2"}),
        ('label_replace(m:rule, "dst", "$1", "src", "(.*)")', {"m:rule"}),
    ],
)
def test_metric_names_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_exposed_names_include_what_a_type_line_promises() -> None:
    text = '# HELP h_seconds x\n# TYPE h_seconds histogram\n# HELP c_total y\n# TYPE c_total counter\ng{a="b"} 1.0\n'
    assert exposed_names(text) == {"h_seconds", "h_seconds_bucket", "h_seconds_sum", "h_seconds_count", "c_total", "g"}
