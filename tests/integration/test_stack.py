"""The compose stack's files: compose validated by docker compose v2, the collector, Tempo
and Grafana provisioning checked for what they declare (no collector, Tempo or Grafana
binary runs here), and the stack started for real where a Docker engine is present."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support import ROOT, wait_for

PASSWORD = {"GRAFANA_ADMIN_PASSWORD": "test-only-password"}


def compose(bin_dir: Path, *args: str, env: dict[str, str] | None = None,
            file: str = "compose.yaml") -> subprocess.CompletedProcess:  # fmt: skip
    binary = bin_dir.parent / "libexec" / "docker" / "cli-plugins" / "docker-compose"
    environment = {k: v for k, v in os.environ.items() if k != "GRAFANA_ADMIN_PASSWORD"}
    return subprocess.run([binary, "-f", ROOT / file, *args], capture_output=True,
                          text=True, env={**environment, **(env or {})}, cwd=ROOT)  # fmt: skip


def load(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())


def test_compose_config_is_valid_and_keeps_its_promises(bin_dir: Path) -> None:
    assert compose(bin_dir, "config", "-q", env=PASSWORD).returncode == 0
    missing = compose(bin_dir, "config", "-q")
    assert missing.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in missing.stderr
    config = json.loads(compose(bin_dir, "config", "--format", "json", env=PASSWORD).stdout)
    services = config["services"]
    assert set(services) == {"reference-bridge", "runwatch", "otel-collector", "prometheus",
                             "alertmanager", "alert-log", "tempo", "loki", "grafana"}  # fmt: skip
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes beyond loopback"
        if "image" in service:
            assert re.search(r":v?\d+\.\d+\.\d+$", service["image"]), f"{name} is not pinned"
    for name in ("reference-bridge", "runwatch", "prometheus", "alertmanager", "alert-log",
                 "loki", "grafana"):  # fmt: skip
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"
    # the alerts reach Alertmanager, which runs the shipped config and posts to the alert log
    alerting = load("prometheus/prometheus.yml")["alerting"]["alertmanagers"][0]
    assert alerting["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in services["alertmanager"][
        "command"]  # fmt: skip
    assert any(v["source"].endswith("/alertmanager") for v in services["alertmanager"]["volumes"])
    assert (
        "http://alert-log:9095/alerts" in (ROOT / "alertmanager" / "alertmanager.yml").read_text()
    )
    assert services["alert-log"]["command"] == ["--listen", "0.0.0.0:9095"]
    grafana = services["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert PASSWORD["GRAFANA_ADMIN_PASSWORD"] not in (ROOT / "compose.yaml").read_text()
    runwatch = " ".join(services["runwatch"]["command"])
    # metrics, spans and the event log to the collector, under the names /metrics shows
    assert "--otlp-naming=prometheus" in runwatch and "otel-collector:4318" in runwatch
    assert "--no-otlp-metrics" not in runwatch
    # every logged step into Prometheus, with the instance the pushed series carry
    assert "--remote-write-url=http://prometheus:9090/api/v1/write" in runwatch
    assert "--web.enable-remote-write-receiver" in services["prometheus"]["command"]
    assert "--history-instance=runwatch:19464" in runwatch
    scraped = load("prometheus/prometheus.yml")["scrape_configs"]
    assert [job["job_name"] for job in scraped] == ["otel-collector"]  # runwatch comes pushed
    # Loki: its native OTLP endpoint is what the collector's logs pipeline sends to
    assert services["loki"]["healthcheck"]["test"] == ["CMD", "/usr/bin/loki", "-health"]
    assert any(v["source"].endswith("/loki/loki.yaml") for v in services["loki"]["volumes"])
    assert services["otel-collector"]["depends_on"]["loki"]["condition"] == "service_healthy"
    loki = load("loki/loki.yaml")
    assert loki["limits_config"]["allow_structured_metadata"] is True  # the OTLP attributes
    assert loki["schema_config"]["configs"][0]["schema"] == "v13"
    assert loki["analytics"]["reporting_enabled"] is False


def built_components(bin_dir: Path) -> dict[str, set[str]]:
    """The component types in the collector built from otel-collector/builder.yaml, as the
    binary itself lists them."""
    listed = subprocess.run([bin_dir / "otelcol-runwatch", "components"], capture_output=True,
                            text=True, check=True)  # fmt: skip
    parsed = yaml.safe_load(listed.stdout)
    assert parsed["buildinfo"]["version"] == load("otel-collector/builder.yaml")["dist"]["version"]
    return {kind: {c["name"] for c in parsed.get(kind) or []}
            for kind in ("receivers", "processors", "exporters", "connectors")}  # fmt: skip


@pytest.mark.parametrize("path", ["otel-collector/config.yaml", "otel-collector/gateway.yaml"])
def test_the_collector_pipelines_use_only_built_components(path: str, bin_dir: Path) -> None:
    config = load(path)
    built = built_components(bin_dir)
    declared = {kind: set(config.get(kind, {})) for kind in built}
    for kind, names in declared.items():  # the builder manifest lists exactly what is used
        assert {name.split("/")[0] for name in names} == built[kind], (path, kind)
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    for name, pipeline in pipelines.items():
        assert pipeline["processors"][0] == "memory_limiter", f"{name}: memory_limiter first"
    # span metrics are Tempo's alone (a connector in stateless gateways splits the counts)
    assert "connectors" not in config and pipelines["traces"]["exporters"] == ["otlp_grpc/tempo"]
    (reader,) = config["service"]["telemetry"]["metrics"]["readers"]  # not the old `address`
    assert reader["pull"]["exporter"]["prometheus"] == {"host": "0.0.0.0", "port": 8888}
    remote_write = config["exporters"]["prometheus_remote_write"]
    assert remote_write["endpoint"].endswith("/api/v1/write")
    assert remote_write["resource_constant_labels"] == {"included": ["*"]}
    # the event log to Loki's native OTLP endpoint (otlp_http appends /v1/logs)
    assert pipelines["logs"]["exporters"] == ["otlp_http/loki"]
    assert config["exporters"]["otlp_http/loki"]["endpoint"] == "http://loki:3100/otlp"


def test_the_builder_manifest_is_one_collector_release(bin_dir: Path) -> None:
    manifest = load("otel-collector/builder.yaml")
    version = manifest["dist"]["version"]
    modules = [c["gomod"] for kind in ("receivers", "processors", "exporters")
               for c in manifest[kind]]  # fmt: skip
    assert modules and all(m.endswith(f" v{version}") for m in modules), modules
    assert built_components(bin_dir)["exporters"] == {"otlp_grpc", "otlp_http",
                                                      "prometheus_remote_write"}  # fmt: skip


def images(file: str) -> dict[str, str]:
    """Image name (without registry path) -> tag, for every pinned image of a compose file."""
    services = load(file)["services"]
    return dict(s["image"].rsplit(":", 1) for s in services.values() if "image" in s)


def test_one_version_everywhere(bin_dir: Path) -> None:
    """compose.yaml, compose.scale.yaml and what the tests run carry the same versions."""
    single, scaled = images("compose.yaml"), images("compose.scale.yaml")
    for name in set(single) & set(scaled):
        assert single[name] == scaled[name], name
    assert set(single) - set(scaled) == {"prom/prometheus"}
    script = (ROOT / "scripts" / "install-components").read_text()

    def pinned(variable: str) -> str:
        match = re.search(rf"{re.escape(variable)}=@?([\w./@-]+)", script)
        assert match, variable
        return match[1].rsplit("@", 1)[-1]

    collector = load("otel-collector/builder.yaml")["dist"]["version"]
    assert single["otel/opentelemetry-collector-contrib"] == collector
    assert single["prom/prometheus"] == "v" + pinned("PROMETHEUS")
    assert single["prom/alertmanager"] == "v" + pinned("[prometheus-alertmanager]")
    assert single["grafana/grafana"] == pinned("GRAFANA_SCHEMA")
    for vm in ("victoriametrics/vmstorage", "victoriametrics/vminsert", "victoriametrics/vmselect"):
        assert scaled[vm] == "v" + pinned("[victoria-metrics]") + "-cluster", vm
    assert scaled["victoriametrics/vmalert"] == "v" + pinned("[victoria-metrics]")
    # and the programs the tests start say so themselves (Debian's VictoriaMetrics prints
    # no version: scripts/install-components checks its package's version instead)
    versions = {
        "prometheus": single["prom/prometheus"].lstrip("v"),
        "prometheus-alertmanager": single["prom/alertmanager"].lstrip("v"),
        "otelcol-runwatch": collector,
    }
    for program, version in versions.items():
        said = subprocess.run([bin_dir / program, "--version"], capture_output=True, text=True)
        assert version in said.stdout + said.stderr, (program, said.stdout + said.stderr)
    # Tempo and Loki: the config files say the version compose runs
    for path, image in (("tempo/tempo.yaml", "grafana/tempo"),
                        ("tempo/scale.yaml", "grafana/tempo"),
                        ("loki/loki.yaml", "grafana/loki")):  # fmt: skip
        assert f"{image}:{single[image]}" in (ROOT / path).read_text(), path


def test_the_scale_out_topology_is_valid_and_keeps_the_dashboards(bin_dir: Path) -> None:
    assert compose(bin_dir, "config", "-q", env=PASSWORD, file="compose.scale.yaml").returncode == 0
    config = json.loads(compose(bin_dir, "config", "--format", "json", env=PASSWORD,
                                file="compose.scale.yaml").stdout)  # fmt: skip
    services = config["services"]
    for name, service in services.items():
        if "image" in service:
            assert re.search(r":v?\d+\.\d+\.\d+(-cluster)?$", service["image"]), name
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", name
    nodes = [s for s in services.values() if "--otlp-naming=prometheus" in (s.get("command") or [])]
    assert len(nodes) == 2
    identities = {s["environment"]["OTEL_RESOURCE_ATTRIBUTES"] for s in nodes}
    assert all("service.instance.id=" in i and "host.name=" in i for i in identities)
    assert len(identities) == 2
    assert services["gateway"]["deploy"]["replicas"] >= 2
    single = load("grafana/provisioning/datasources/runwatch.yaml")["datasources"]
    scaled = load("grafana/provisioning/scale-datasources/runwatch.yaml")["datasources"]
    assert {s["uid"] for s in scaled} == {s["uid"] for s in single}
    assert "loki" in services and "loki" in services["gateway"]["depends_on"]
    # the same rules evaluated by vmalert over vmselect, into the same Alertmanager setup
    vmalert = services["vmalert"]["command"]
    for flag in ("-rule=/etc/prometheus/rules/*.yml", "-notifier.url=http://alertmanager:9093",
                 "-datasource.url=http://vmselect:8481/select/0/prometheus",
                 "-disableAlertgroupLabel"):  # fmt: skip
        assert flag in vmalert, flag
    assert any(v["source"].endswith("/prometheus/rules") for v in services["vmalert"]["volumes"])
    assert any(v["source"].endswith("/alertmanager") for v in services["alertmanager"]["volumes"])


@pytest.mark.parametrize(("path", "store"), [
    ("tempo/tempo.yaml", "http://prometheus:9090/api/v1/write"),
    ("tempo/scale.yaml", "http://vminsert:8480/insert/0/prometheus/api/v1/write"),
])  # fmt: skip
def test_tempo_makes_the_span_metrics_with_the_run_and_sends_no_usage_report(
    path: str, store: str
) -> None:
    config = load(path)
    assert config["usage_report"]["reporting_enabled"] is False  # a local stack
    assert set(config["distributor"]["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    remote = config["metrics_generator"]["storage"]["remote_write"][0]
    assert remote["url"] == store and remote["send_exemplars"]
    generator = config["overrides"]["defaults"]["metrics_generator"]
    assert generator["processors"] == ["span-metrics"]  # no empty service graph
    assert generator["max_active_series"] > 0
    span_metrics = config["metrics_generator"]["processor"]["span_metrics"]
    assert {"name": "run_id", "source_labels": ["training.run_id"]} in span_metrics[
        "dimension_mappings"]  # fmt: skip


def test_grafana_provisioning_links_metrics_exemplars_and_traces() -> None:
    sources = {s["uid"]: s for s in load("grafana/provisioning/datasources/runwatch.yaml")[
        "datasources"]}  # fmt: skip
    prometheus, tempo = sources["runwatch-prometheus"], sources["runwatch-tempo"]
    exemplars = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    # runwatch's exemplars say trace_id, Tempo's generator's traceID: both link to Tempo
    assert {(e["name"], e["datasourceUid"]) for e in exemplars} == {
        ("trace_id", "runwatch-tempo"), ("traceID", "runwatch-tempo")}  # fmt: skip
    traces_to_metrics = tempo["jsonData"]["tracesToMetrics"]
    assert traces_to_metrics["datasourceUid"] == "runwatch-prometheus"
    assert traces_to_metrics["tags"] == [{"key": "training.run_id", "value": "run_id"}]
    queries = [q["query"] for q in traces_to_metrics["queries"]]  # no queries: no link
    assert queries and all("{$__tags}" in q for q in queries)
    assert any("traces_spanmetrics_calls_total" in q for q in queries)
    assert "serviceMap" not in tempo["jsonData"]  # all spans are INTERNAL to one service
    # log -> trace: the trace_id structured metadata Loki keeps from each OTLP record
    (derived,) = sources["runwatch-loki"]["jsonData"]["derivedFields"]
    assert (derived["matcherType"], derived["matcherRegex"]) == ("label", "trace_id")
    assert derived["datasourceUid"] == "runwatch-tempo"
    assert derived["url"] == "$${__value.raw}"  # $$: a literal $ in provisioning files
    # trace -> logs: the lines carrying the trace's id
    logs = tempo["jsonData"]["tracesToLogsV2"]
    assert logs["datasourceUid"] == "runwatch-loki" and logs["customQuery"] is True
    assert 'trace_id="$${__trace.traceId}"' in logs["query"]
    provider = load("grafana/provisioning/dashboards/runwatch.yaml")["providers"][0]
    mounts = load("compose.yaml")["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts


def _docker_engine() -> str | None:
    """None when an engine answers, else why the stack test cannot run."""
    import docker

    try:
        docker.from_env().ping()
    except Exception as exc:
        return f"no Docker engine here ({type(exc).__name__}): the stack cannot be started"
    return None


@pytest.mark.skipif(_docker_engine() is not None, reason=str(_docker_engine()))
def test_the_stack_starts_and_grafana_serves_the_provisioned_setup(bin_dir: Path) -> None:
    up = compose(bin_dir, "up", "-d", "--build", "--wait", env=PASSWORD)
    try:
        assert up.returncode == 0, up.stderr
        health = wait_for(lambda: httpx.get("http://127.0.0.1:3000/api/health").json(),
                          timeout=120, what="Grafana")  # fmt: skip
        assert health["database"] == "ok"
        sources = httpx.get("http://127.0.0.1:3000/api/datasources",
                            auth=("admin", PASSWORD["GRAFANA_ADMIN_PASSWORD"])).json()  # fmt: skip
        assert {s["uid"] for s in sources} >= {"runwatch-prometheus", "runwatch-tempo"}

        def portfolio() -> list:
            query = {"query": "trading_portfolio_value"}
            return httpx.get("http://127.0.0.1:9090/api/v1/query", params=query).json()["data"][
                "result"
            ]

        wait_for(portfolio, timeout=120, what="data in Prometheus")
    finally:
        compose(bin_dir, "down", "-v", env=PASSWORD)
