"""The deployment and monitoring files, checked offline against the code they describe.

Given the worker's real metrics registry, options and configuration loader, these tests prove
that the Grafana dashboard and the alert rules name only metrics the worker exports, that the
rules pass ``promtool check rules`` and their unit tests, that docker-compose.yml and the
Dockerfile are pinned and wired to the worker's real environment variables, and that the
Kubernetes manifests validate against the Kubernetes schemas (``kubernetes-validate``, strict)
and the PodMonitor CRD schema kept in ``deploy/k8s/schemas/``. Nothing here needs Docker, a
cluster or the network.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from streams.config import build_config
from streams.ops.metrics import Metrics
from streams.settings import OPTIONS, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
K8S = DEPLOY / "k8s"
DASHBOARD = GRAFANA / "dashboards" / "lifecycle-triggers.json"
# Every alert needs its runbook section and every metric its line in the docs (the runbooks and
# the metrics list are in docs/operations.md; the README and the other docs may name metrics too).
OPERATIONS = ROOT / "docs" / "operations.md"
README_FILES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
PODMONITOR_SCHEMA = K8S / "schemas" / "podmonitor.json"

# The job name the rules and the dashboard rely on: compose's scrape job, the PodMonitor's
# jobLabel value and the Kubernetes scrape example all produce it.
JOB = "lifecycle-triggers"
ENV_NAMES = {opt.env for opt in OPTIONS}
SECRET_ENV_NAMES = {opt.env for opt in OPTIONS if opt.secret}
# Kubernetes versions to validate against: an old supported one and the newest bundled.
K8S_VERSIONS = ("1.27.0", kubernetes_validate.utils.latest_version())
CORE_KINDS = {"ConfigMap", "Secret", "Service", "StatefulSet", "PodDisruptionBudget"}
PROMTOOL_MISSING = (
    "promtool not found: install Debian's prometheus package (apt-get install prometheus)"
)


def readme_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in README_FILES if p.is_file())


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_yaml_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


# --- PromQL metric names -------------------------------------------------------------------

# Series Prometheus records itself for every scrape target (not exported by the worker).
PROMETHEUS_SYNTHETIC = {"up"}
PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
    "atan2",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+")
_IDENT = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?:(.*),)?\s*\w+\s*\)\s*$", re.S)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana label_values() query) selects.

    Strings, label matchers, ranges, grouping label lists and Grafana variables are removed
    first; what is left that looks like an identifier and is not a call or a keyword is a
    metric name.
    """
    m = _LABEL_VALUES.match(expr)
    if m:
        expr = m.group(1) or ""
    text = _STRING.sub('""', expr)
    text = _GRAFANA_VAR.sub("", text)
    text = _BRACES.sub("", text)
    text = _BRACKETS.sub("", text)
    text = _LABEL_LIST.sub("", text)
    names = set()
    for ident, call in _IDENT.findall(text):
        if call or ident.lower() in PROMQL_KEYWORDS:
            continue
        names.add(ident)
    return names


def exported_names() -> set[str]:
    """Every series name the worker's registry puts on /metrics."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        else:
            names.add(family.name)
    return names


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def dashboard_panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, expression) for every query of the dashboard, templating included."""
    exprs = [
        (f"panel {p['title']!r}", t["expr"])
        for p in dashboard_panels()
        for t in p.get("targets", [])
    ]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]
            exprs.append((f"variable {var['name']!r}", query["query"]))
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    groups = load_yaml(PROMETHEUS / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_metric_name_parser_finds_names_and_skips_everything_else() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, clock) (rate(a_seconds_bucket{job=~"$job"}'
        "[$__rate_interval]))) > 2 and on (job) b_total offset 5m unless count(up) == 1e3"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "up"}
    assert metric_names('label_values(lifecycle_worker_ready{job=~"$job"}, instance)') == {
        "lifecycle_worker_ready"
    }
    assert metric_names("label_values(job)") == set()


def test_exported_names_use_the_exposition_suffixes() -> None:
    names = exported_names()
    assert "lifecycle_events_consumed_total" in names
    assert "lifecycle_event_to_decision_seconds_bucket" in names
    assert "lifecycle_worker_ready" in names
    assert "lifecycle_events_consumed" not in names


def test_dashboard_queries_name_only_exported_metrics() -> None:
    known = exported_names() | PROMETHEUS_SYNTHETIC
    exprs = dashboard_exprs()
    assert len(exprs) > 20
    for where, expr in exprs:
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        assert names <= known, f"{where}: unknown metrics {sorted(names - known)} in {expr!r}"


def test_alert_rules_name_only_exported_metrics() -> None:
    known = exported_names() | PROMETHEUS_SYNTHETIC
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']}: no metric found"
        assert names <= known, f"{rule['alert']}: unknown metrics {sorted(names - known)}"


# --- Grafana ---------------------------------------------------------------------------------

REQUIRED_DASHBOARD_METRICS = {
    "lifecycle_events_consumed_total",
    "lifecycle_consumer_lag_records",
    "lifecycle_event_to_decision_seconds_bucket",
    "lifecycle_decisions_total",
    "lifecycle_decision_reasons_total",
    "lifecycle_triggers_fired_total",
    "lifecycle_dead_letters_total",
    "lifecycle_ledger_call_seconds_bucket",
    "lifecycle_ledger_errors_total",
    "lifecycle_redis_up",
    "lifecycle_worker_ready",
    "lifecycle_due_items",
    "lifecycle_rebalances_total",
}


def test_dashboard_shows_what_an_operator_watches() -> None:
    used = set().union(*(metric_names(expr) for _, expr in dashboard_exprs()))
    assert REQUIRED_DASHBOARD_METRICS <= used, sorted(REQUIRED_DASHBOARD_METRICS - used)
    # Throughput by topic and type; decisions by outcome; suppressions by reason.
    exprs = [expr for _, expr in dashboard_exprs()]
    assert any("sum by (topic, type)" in e and "events_consumed" in e for e in exprs)
    assert any("sum by (outcome)" in e and "lifecycle_decisions_total" in e for e in exprs)
    assert any("sum by (reason)" in e and "decision_reasons" in e for e in exprs)
    assert any("sum by (trigger)" in e and "triggers_fired" in e for e in exprs)
    # Event-to-decision percentiles per clock.
    for quantile in ("0.5", "0.95", "0.99"):
        assert any(
            e.startswith(f"histogram_quantile({quantile}, sum by (le, clock)")
            and "lifecycle_event_to_decision_seconds_bucket" in e
            for e in exprs
        ), quantile


def test_dashboard_is_well_formed_grafana_json() -> None:
    dash = dashboard()
    assert dash["uid"] == "lifecycle-triggers"
    assert isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard_panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard_panels():
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert target["expr"].strip()


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    datasources = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    (ds,) = datasources["datasources"]
    assert (ds["type"], ds["url"]) == ("prometheus", "http://prometheus:9090")
    assert ds["isDefault"] is True
    providers = load_yaml(GRAFANA / "provisioning" / "dashboards" / "dashboards.yml")["providers"]
    assert providers[0]["type"] == "file"
    compose = load_yaml(ROOT / "docker-compose.yml")["services"]["grafana"]
    mounts = dict(_mount(v) for v in compose["volumes"])
    dashboards_dir = providers[0]["options"]["path"]
    assert mounts[dashboards_dir] == "./deploy/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"


# --- Prometheus --------------------------------------------------------------------------------

REQUIRED_ALERTS = {
    "LifecycleConsumerLagGrowing",
    "LifecycleNoEventsConsumed",
    "LifecycleDeadLetterRateHigh",
    "LifecycleLedgerErrors",
    "LifecycleRedisDown",
    "LifecycleDecisionLatencyHigh",
    "LifecycleWorkerDown",
    "LifecycleWorkerNotReady",
    "LifecycleRebalanceLoop",
}


def test_alert_rules_are_complete_and_documented() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED_ALERTS
    runbooks = OPERATIONS.read_text(encoding="utf-8")
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        notes = rule["annotations"]
        assert {"summary", "description", "runbook"} <= set(notes), rule["alert"]
        assert notes["runbook"] == f"docs/operations.md#{rule['alert'].lower()}"
        assert f"#### {rule['alert']}\n" in runbooks, f"no runbook section for {rule['alert']}"
    tested = {
        case["alertname"]
        for test in load_yaml(PROMETHEUS / "alerts_test.yml")["tests"]
        for case in test["alert_rule_test"]
    }
    assert tested == set(names), "every alert needs a promtool unit test"


def test_readme_sections_list_every_metric_and_no_other() -> None:
    text = readme_text()
    named = set(re.findall(r"`(lifecycle_[a-z_]+)`", text))
    # The process_* and python_* collectors are prometheus_client's own (the README names them).
    families = [f for f in Metrics().registry.collect() if f.name.startswith("lifecycle_")]
    # Histograms are listed by their family name, the rest as they appear on /metrics.
    listed = {f"{f.name}_total" if f.type == "counter" else f.name for f in families}
    assert named <= listed | exported_names(), sorted(named - listed - exported_names())
    assert listed <= named, f"metrics missing from the list: {sorted(listed - named)}"


def test_scrape_configs_reach_the_worker() -> None:
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == JOB]
    worker = load_yaml(ROOT / "docker-compose.yml")["services"]["worker"]
    port = worker["environment"]["METRICS_PORT"]
    assert job["static_configs"][0]["targets"] == [f"worker:{port}"]
    assert job["metrics_path"] == "/metrics"

    k8s = load_yaml(PROMETHEUS / "prometheus-kubernetes.yml")
    (kjob,) = [j for j in k8s["scrape_configs"] if j["job_name"] == JOB]
    assert kjob["kubernetes_sd_configs"][0]["role"] == "pod"
    keep = [r for r in kjob["relabel_configs"] if r.get("action") == "keep"]
    assert keep[0]["source_labels"] == ["__meta_kubernetes_pod_container_port_name"]
    assert keep[0]["regex"] == _container(_statefulset())["ports"][0]["name"]


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(PROMTOOL_MISSING)
    return path


def _run(args: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_check_rules(promtool: str) -> None:
    result = _run([promtool, "check", "rules", str(PROMETHEUS / "alerts.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_test_rules(promtool: str) -> None:
    result = _run([promtool, "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_config(promtool: str) -> None:
    result = _run([promtool, "check", "config", str(PROMETHEUS / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config_of_the_kubernetes_example(promtool: str, tmp_path: Path) -> None:
    path = PROMETHEUS / "prometheus-kubernetes.yml"
    result = _run([promtool, "check", "config", str(path)])
    if "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        # Debian builds Prometheus without Kubernetes discovery: check everything else of the
        # file (relabelling, rule files) with a static target in place of the discovery.
        config = load_yaml(path)
        for job in config["scrape_configs"]:
            if job.pop("kubernetes_sd_configs", None) is not None:
                job["static_configs"] = [{"targets": ["worker:9108"]}]
        copy_path = tmp_path / path.name
        copy_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
        result = _run([promtool, "check", "config", str(copy_path)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_parse_as_promql(promtool: str, tmp_path: Path) -> None:
    """promtool parses every dashboard query, written as a recording rule."""

    def concrete(expr: str) -> str:
        expr = expr.replace("$__rate_interval", "5m").replace("$__range", "1h")
        return _GRAFANA_VAR.sub(".*", expr)

    rules = [
        {"record": f"dashboard:query_{i}", "expr": concrete(expr)}
        for i, (_, expr) in enumerate(dashboard_exprs())
        if not _LABEL_VALUES.match(expr)
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _run([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


# --- docker-compose and Dockerfile -------------------------------------------------------------

PINNED_IMAGE = re.compile(r"^[a-z0-9./_-]+:(?P<tag>[A-Za-z0-9._-]+)$")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(ROOT / "docker-compose.yml")
    return data


def _mount(volume: str) -> tuple[str, str]:
    source, target = volume.split(":")[:2]
    return target, source


def _ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    pairs = []
    for port in service.get("ports", []):
        host, container = str(port).split(":")[-2:]
        pairs.append((int(host), int(container)))
    return pairs


def test_compose_publishes_ports_on_this_machine_only() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} on every interface"


def test_compose_redis_wants_a_password_and_grafana_no_anonymous_admin() -> None:
    services = compose()["services"]
    redis = services["redis"]
    assert "--requirepass" in " ".join(redis["command"])
    assert redis["environment"]["REDIS_PASSWORD"] == "${REDIS_PASSWORD:?set REDIS_PASSWORD}"
    assert "REDISCLI_AUTH" in " ".join(redis["healthcheck"]["test"])
    url = services["worker"]["environment"]["REDIS_URL"]
    assert url.startswith("redis://:${REDIS_PASSWORD:?")
    grafana = services["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert "admin" not in grafana["GF_SECURITY_ADMIN_PASSWORD"].split(":?")[1]


def test_compose_has_every_service_with_a_pinned_image() -> None:
    services = compose()["services"]
    assert set(services) >= {"kafka", "kafka-init", "redis", "prometheus", "grafana", "worker"}
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name}: no image (a build needs an image name with a version too)"
        m = PINNED_IMAGE.match(image)
        assert m, f"{name}: image {image!r} is not pinned to a tag"
        assert m["tag"] != "latest", f"{name}: image {image!r} uses latest"
        for host, container in _ports(service):
            assert 0 < host < 65536 and 0 < container < 65536, name


def test_compose_kafka_runs_kraft_without_auto_topic_creation() -> None:
    kafka = compose()["services"]["kafka"]
    env = kafka["environment"]
    assert kafka["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert not [k for k in env if "ZOOKEEPER" in k]
    assert "healthcheck" in kafka


def test_compose_keeps_the_broker_log_as_it_keeps_the_worker_state() -> None:
    # The worker's RocksDB state is on a named volume; a broker log that a `docker compose
    # down`/`up` replaces would leave that state ahead of a fresh log.
    config = compose()
    kafka = config["services"]["kafka"]
    log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"]
    mounts = dict(_mount(v) for v in kafka.get("volumes", []))
    for log_dir in log_dirs.split(","):
        assert log_dir in mounts, f"the broker's log dir {log_dir} is on no volume"
        assert mounts[log_dir] in config["volumes"], "a named volume, not a bind mount"
    worker_mounts = dict(_mount(v) for v in config["services"]["worker"]["volumes"])
    assert "worker-state" in worker_mounts.values() and "worker-state" in config["volumes"]
    # A kept log dir is formatted once, with one cluster id: the id must not change.
    assert kafka["environment"]["CLUSTER_ID"]


def test_compose_init_creates_the_contract_topics_with_explicit_partitions() -> None:
    services = compose()["services"]
    init = services["kafka-init"]
    script = "\n".join(init["command"])
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert "--create" in script
    topics = set(build_config()["topics"].values())
    assert len(topics) == 5  # the four of the contract and decision-outcomes
    for topic in topics:
        assert re.search(rf"\b{re.escape(topic)}\b", script), topic
    (partitions,) = set(re.findall(r"--partitions (\d+)", script))
    assert partitions == services["worker"]["environment"]["TOPIC_PARTITIONS"]


def test_compose_worker_is_built_and_configured_with_known_variables() -> None:
    services = compose()["services"]
    worker = services["worker"]
    assert worker["build"] == "."
    assert (ROOT / "Dockerfile").is_file()
    env = {k: str(v) for k, v in worker["environment"].items()}
    assert set(env) <= ENV_NAMES, sorted(set(env) - ENV_NAMES)
    # compose fills ${REDIS_PASSWORD:?...} in; any password will do for the check.
    env["REDIS_URL"] = re.sub(r"\$\{REDIS_PASSWORD[^}]*\}", "pw", env["REDIS_URL"])
    settings = Settings.from_options({}, environ=env)  # the values are valid, too
    assert settings.metrics_host == "0.0.0.0"  # noqa: S104 - scraped from another container
    assert (9108, settings.metrics_port) in _ports(worker)
    assert dict(_mount(v) for v in worker["volumes"])[str(settings.state_dir)] == "worker-state"
    assert settings.bootstrap_servers.split(":")[0] in services
    assert settings.redis_url.split("@")[1].split(":")[0] in services
    assert worker["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_prometheus_loads_the_rules_and_grafana_the_dashboard() -> None:
    services = compose()["services"]
    prom = services["prometheus"]
    mounts = dict(_mount(v) for v in prom["volumes"])
    assert mounts["/etc/prometheus"] == "./deploy/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    assert (9090, 9090) in _ports(prom)
    assert (3000, 3000) in _ports(services["grafana"])
    assert (PROMETHEUS / "prometheus.yml").is_file() and (PROMETHEUS / "alerts.yml").is_file()


def test_dockerfile_is_pinned_non_root_and_health_checked() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    for image in re.findall(r"^FROM\s+(\S+)", text, re.M):
        m = PINNED_IMAGE.match(image)
        assert m and m["tag"] != "latest", image
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.M)
    assert re.search(r"^EXPOSE 9108$", text, re.M)


# --- Kubernetes --------------------------------------------------------------------------------


def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend((path.name, doc) for doc in load_yaml_all(path))
    return docs


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for _, d in k8s_docs() if d["kind"] == kind]
    if name is not None:
        found = [d for d in found if d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def _statefulset() -> dict[str, Any]:
    return _one("StatefulSet")


def _container(sts: dict[str, Any]) -> dict[str, Any]:
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = container
    return result


def _env_configmap() -> dict[str, str]:
    data: dict[str, str] = _one("ConfigMap", "lifecycle-triggers-env")["data"]
    return data


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_every_manifest_is_a_known_kind_and_listed_in_the_kustomization() -> None:
    docs = k8s_docs()
    kinds = {d["kind"] for _, d in docs}
    assert kinds == CORE_KINDS | {"PodMonitor"}
    resources = set(load_yaml(K8S / "kustomization.yaml")["resources"])
    files = {name for name, _ in docs}
    assert resources == files - {"secret.example.yaml"}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    checked = 0
    for _, doc in k8s_docs():
        if doc["kind"] in CORE_KINDS:
            kubernetes_validate.validate(doc, version, strict=True)
            checked += 1
    assert checked >= 6


def test_strict_validation_refuses_an_unknown_field() -> None:
    sts = copy.deepcopy(_statefulset())
    _container(sts)["livenesProbe"] = {"httpGet": {"path": "/healthz", "port": "metrics"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, K8S_VERSIONS[-1], strict=True)


def test_podmonitor_validates_against_the_crd_schema_kept_in_the_repo() -> None:
    schema = json.loads(PODMONITOR_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    monitor = _one("PodMonitor")
    validator.validate(monitor)
    typo = copy.deepcopy(monitor)
    typo["spec"]["podMetricEndpoints"] = typo["spec"].pop("podMetricsEndpoints")
    assert not validator.is_valid(typo)
    bad_interval = copy.deepcopy(monitor)
    bad_interval["spec"]["podMetricsEndpoints"][0]["interval"] = "15 seconds"
    assert not validator.is_valid(bad_interval)


def test_podmonitor_scrapes_the_worker_pods_as_the_rules_job() -> None:
    monitor = _one("PodMonitor")
    labels = _statefulset()["spec"]["template"]["metadata"]["labels"]
    assert _matches(monitor["spec"]["selector"]["matchLabels"], labels)
    assert labels[monitor["spec"]["jobLabel"]] == JOB
    port_names = {p["name"] for p in _container(_statefulset())["ports"]}
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"


def test_statefulset_has_state_volume_probes_resources_and_graceful_termination() -> None:
    sts = _statefulset()
    pod = sts["spec"]["template"]["spec"]
    container = _container(sts)
    env = _env_configmap()
    assert _matches(
        sts["spec"]["selector"]["matchLabels"], sts["spec"]["template"]["metadata"]["labels"]
    )
    assert _one("Service", sts["spec"]["serviceName"])["spec"]["clusterIP"] == "None"

    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    claims = {c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]}
    state_claims = [name for name in claims if mounts.get(name) == env["STATE_DIR"]]
    assert state_claims, "STATE_DIR must be on a volumeClaimTemplate (RocksDB state)"

    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind

    (port,) = [p for p in container["ports"] if p["name"] == "metrics"]
    assert str(port["containerPort"]) == env["METRICS_PORT"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}

    assert pod["terminationGracePeriodSeconds"] >= 60
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_statefulset_environment_uses_known_variables_and_secrets_for_secrets() -> None:
    container = _container(_statefulset())
    env = _env_configmap()
    from_configmaps = [e["configMapRef"]["name"] for e in container["envFrom"]]
    assert from_configmaps == ["lifecycle-triggers-env"]
    direct = {e["name"]: e for e in container.get("env", [])}
    names = set(env) | set(direct)
    assert names <= ENV_NAMES, sorted(names - ENV_NAMES)
    for name in SECRET_ENV_NAMES:
        assert name not in env, f"{name} is a secret: not in a ConfigMap"
        assert "secretKeyRef" in direct[name]["valueFrom"], name
        ref = direct[name]["valueFrom"]["secretKeyRef"]
        example = _one("Secret", ref["name"])
        assert ref["key"] in example["stringData"]
    redis_url = _one("Secret")["stringData"]["REDIS_URL"]
    settings = Settings.from_options({}, environ={**env, "REDIS_URL": redis_url})
    assert settings.store == "rocksdb"


def test_statefulset_passes_the_mounted_policy_as_config() -> None:
    sts = _statefulset()
    container = _container(sts)
    args = container["args"]
    assert args[0] == "worker"
    config_path = Path(args[args.index("--config") + 1])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume_name = mounts[str(config_path.parent)]
    (volume,) = [v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == volume_name]
    assert volume["configMap"]["name"] == "lifecycle-triggers-policy"
    assert {"key": "policy.yaml", "path": config_path.name} in volume["configMap"]["items"]


def test_policy_configmap_is_a_valid_configuration(tmp_path: Path) -> None:
    policy = _one("ConfigMap", "lifecycle-triggers-policy")["data"]["policy.yaml"]
    path = tmp_path / "policy.yaml"
    path.write_text(policy, encoding="utf-8")
    script = Path(sys.executable).with_name("lifecycle-triggers")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "streams"]
    result = _run([*command, "config", "--config", str(path)])
    assert result.returncode == 0, result.stderr
    effective = yaml.safe_load(result.stdout)
    assert effective["triggers"]["replacement_due"]["cycle_days"]["water_filter"] == 60


def test_services_and_disruption_budget_select_the_workers() -> None:
    labels = _statefulset()["spec"]["template"]["metadata"]["labels"]
    for name in ("lifecycle-triggers-headless", "lifecycle-triggers-metrics"):
        service = _one("Service", name)
        assert _matches(service["spec"]["selector"], labels), name
        assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    pdb = _one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert _matches(pdb["spec"]["selector"]["matchLabels"], labels)


def test_replicas_do_not_exceed_the_partition_count() -> None:
    replicas = _statefulset()["spec"]["replicas"]
    assert 1 <= replicas <= int(_env_configmap()["TOPIC_PARTITIONS"])
