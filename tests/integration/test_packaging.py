"""What a pip user, a systemd host and a Kubernetes cluster get: the wheel (LICENSE, metadata,
the mixin), `runwatch mixin export`, the unit file and the manifests."""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import bcrypt
import pytest
import yaml

from exporter.app.config import DEFAULT_PORT, OPTIONS, resolve
from exporter.app.web_config import WebConfigError, load_web_config
from exporter.cli import _parser
from exporter.mixin import prometheus_rule
from tests.support import ROOT

DEPLOY = ROOT / "deploy"


def built_wheel(project: Path, name: str, into: Path) -> Path:
    """The wheel pip builds from ``project`` (a folder with a pyproject.toml), unpacked
    into ``into``."""
    out = into / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(project)], check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (built,) = out.glob(f"{name}-*.whl")
    zipfile.ZipFile(built).extractall(into)
    return into


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runwatch wheel pip builds from this checkout, unpacked."""
    return built_wheel(ROOT, "runwatch", tmp_path_factory.mktemp("wheel"))


def test_the_wheel_carries_the_license_and_says_what_it_is(wheel: Path) -> None:
    (info,) = wheel.glob("runwatch-*.dist-info")
    assert (info / "licenses" / "LICENSE").read_text().startswith((ROOT / "LICENSE").read_text())
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    metadata = email.message_from_string((info / "METADATA").read_text())
    assert metadata["License-Expression"] == "Apache-2.0"
    assert "Topic :: System :: Monitoring" in metadata.get_all("Classifier")
    assert any(url.startswith("Source, https://") for url in metadata.get_all("Project-URL"))
    assert "prometheus" in metadata["Keywords"]
    for data in (
        "py.typed",
        "core/events.schema.json",
        "core/router/builtin.yaml",
        "app/static/index.html",
        "app/static/app.js",
        "app/static/vendor/uPlot.iife.min.js",
        "app/static/vendor/uPlot.min.css",
        "app/static/vendor/uPlot.LICENSE",
    ):
        assert (wheel / "exporter" / data).exists(), data
    # a plain install does not pull the dashboards-as-code builder: the built boards ship
    needs = metadata.get_all("Requires-Dist")
    (grafana,) = [need for need in needs if need.startswith("grafana-foundation-sdk")]
    assert 'extra == "dashboards"' in grafana
    # the SDK is its own distribution (below), not a part of the server's
    assert not (wheel / "exporter" / "sdk").exists() and not (wheel / "runwatch_sdk").exists()


SDK_SCRIPT = """
import json, sys
from runwatch_sdk import FileTransport, TrainingMonitor
with TrainingMonitor("resnet", {"lr": 3e-4}, transport=FileTransport(sys.argv[1])) as monitor:
    monitor.stage("training")
    monitor.log_metrics({"loss": 0.7}, step=1)
    monitor.mark_best_checkpoint(monitor.save_checkpoint("a.pt", metrics={"loss": 0.7}))
try:
    import exporter
except ImportError:
    print("no runwatch here")
"""


def test_the_sdk_wheel_runs_on_the_standard_library_alone(tmp_path: Path) -> None:
    """runwatch-sdk's wheel, installed into a virtual environment that holds nothing else,
    instruments a run whose every event runwatch accepts."""
    import runwatch_sdk

    import exporter
    from exporter.core.events import parse_line

    assert runwatch_sdk.__version__ == exporter.__version__  # released together
    unpacked = built_wheel(ROOT / "sdk", "runwatch_sdk", tmp_path / "wheel")
    (info,) = unpacked.glob("runwatch_sdk-*.dist-info")
    metadata = email.message_from_string((info / "METADATA").read_text())
    assert metadata["Version"] == exporter.__version__
    assert all("extra ==" in need for need in metadata.get_all("Requires-Dist") or [])
    assert (info / "licenses" / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = venv.glob("lib/python*/site-packages")
    for path in (unpacked / "runwatch_sdk", info):
        shutil.copytree(path, site / path.name)
    events = tmp_path / "events.jsonl"
    run = subprocess.run([str(venv / "bin" / "python"), "-c", SDK_SCRIPT, str(events)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={"PATH": os.environ["PATH"], "HOME": str(tmp_path),
                              "RUNWATCH_PID_DIR": str(tmp_path / "pids")})  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "no runwatch here"
    parsed = [parse_line(line) for line in events.read_bytes().splitlines()]
    assert [type(e).__name__ for e in parsed][:2] == ["RunStart", "StageChange"]
    assert type(parsed[-1]).__name__ == "RunComplete" and parsed[-1].status == "completed"


def test_mixin_export_from_the_installed_wheel_is_the_repository_mixin(
    wheel: Path, tmp_path: Path, bin_dir: Path
) -> None:
    """Run from the unpacked wheel, away from the checkout: the files come from the package."""
    out = tmp_path / "mixin"
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "mixin", "export", str(out)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(wheel)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert str(wheel) in subprocess.run(
        [sys.executable, "-c", "import exporter; print(exporter.__file__)"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(wheel)}, capture_output=True,
        text=True,
    ).stdout  # fmt: skip
    pairs = [("rules", ROOT / "prometheus" / "rules"), ("tests", ROOT / "prometheus" / "tests"),
             ("dashboards", ROOT / "grafana" / "dashboards")]  # fmt: skip
    for part, source in pairs:
        shipped = sorted(p.name for p in (out / part).iterdir())
        expected = sorted(p.name for p in source.iterdir() if p.suffix in (".yml", ".json"))
        assert shipped == expected and shipped
        for name in shipped:
            assert (out / part / name).read_bytes() == (source / name).read_bytes()
    # the exported unit tests run against the exported rules, as a user would run them
    promtool = subprocess.run(
        [str(bin_dir / "promtool"), "test", "rules", *map(str, (out / "tests").iterdir())],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr
    assert (out / "kubernetes" / "prometheusrule.yaml").read_text() == prometheus_rule()


def manifests() -> dict[str, dict]:
    docs = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def test_the_prometheus_rule_holds_exactly_the_rule_files_groups() -> None:
    shipped = (DEPLOY / "kubernetes" / "prometheusrule.yaml").read_text()
    assert shipped == prometheus_rule(), "regenerate it: runwatch mixin export DIR"
    groups = []
    for rule_file in sorted((ROOT / "prometheus" / "rules").glob("*.yml")):
        groups += yaml.safe_load(rule_file.read_text())["groups"]
    assert yaml.safe_load(shipped)["spec"]["groups"] == groups
    assert {g["name"] for g in groups} >= {"runwatch-training"}


def test_the_kubernetes_manifests_fit_together_and_runwatch_accepts_their_args() -> None:
    docs = manifests()
    kustomization = docs.pop("Kustomization")
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in (DEPLOY / "kubernetes").glob("*.yaml") if p.name != "kustomization.yaml"
    )
    assert set(docs) == {"DaemonSet", "Service", "ServiceMonitor", "PrometheusRule"}
    pod = docs["DaemonSet"]["spec"]["template"]
    assert pod["spec"]["hostPID"] is True  # the PIDs of the node's PID files
    (container,) = pod["spec"]["containers"]
    (port,) = container["ports"]
    assert (port["name"], port["containerPort"]) == ("metrics", DEFAULT_PORT)
    labels = pod["metadata"]["labels"]
    assert docs["DaemonSet"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = docs["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    monitor = docs["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert {container["livenessProbe"]["httpGet"]["path"],
            container["readinessProbe"]["httpGet"]["path"]} == {"/healthz", "/readyz"}  # fmt: skip
    args = _parser().parse_args(container["args"])
    settings = resolve(args, [n for n in vars(args) if n not in ("command", "config")])
    assert settings.listen == [("", DEFAULT_PORT)]  # every interface of the pod
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    for path in [*settings.events, *settings.pid_file, settings.state_file]:
        assert any(path.startswith(mount + "/") for mount in mounts), path


def test_the_kubernetes_pods_ask_for_credentials_from_the_web_config_they_mount(
    tmp_path: Path,
) -> None:
    """The shipped web config is refused until its hash is put in (so pods never serve
    writes to anyone), works once it is, and the ServiceMonitor sends credentials."""
    docs = manifests()
    generated = docs["Kustomization"]["secretGenerator"]
    assert generated == [{"name": "runwatch-web-config", "files": ["web-config.yml"]}]
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volume = next(v for v in pod["volumes"] if v.get("secret"))
    assert volume["secret"]["secretName"] == "runwatch-web-config"
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert f"--web.config.file={mount['mountPath']}/web-config.yml" in container["args"]
    auth = docs["ServiceMonitor"]["spec"]["endpoints"][0]["basicAuth"]
    assert {auth["username"]["name"], auth["password"]["name"]} == {"runwatch-scrape"}
    shipped = DEPLOY / "kubernetes" / "web-config.yml"
    with pytest.raises(WebConfigError, match="not a bcrypt hash"):
        load_web_config(str(shipped))
    hashed = bcrypt.hashpw(b"scrape", bcrypt.gensalt(4)).decode()
    filled = tmp_path / "web-config.yml"
    filled.write_text(shipped.read_text().replace("REPLACE-WITH-A-BCRYPT-HASH", hashed))
    assert list(load_web_config(str(filled)).users) == ["prometheus"]


def test_the_systemd_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    unit = (DEPLOY / "systemd" / "runwatch.service").read_text()
    runwatch = Path(sys.executable).with_name("runwatch")
    assert runwatch.exists()
    local = tmp_path / "runwatch.service"  # the installed runwatch, where the unit expects it
    local.write_text(unit.replace("/usr/local/bin/runwatch", str(runwatch)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(local)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    variables = re.findall(r"^Environment=(RUNWATCH_\w+)=", unit, re.M)
    assert variables and set(variables) <= {option.env for option in OPTIONS}


def test_the_image_is_pinned_and_ships_the_mixin() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:[\w.-]+@sha256:[0-9a-f]{64}$", dockerfile, re.M)
    for linked in ("prometheus/rules", "prometheus/tests", "grafana/dashboards"):
        assert f"COPY {linked} ./{linked}" in dockerfile
    # the view's uPlot is built from the pinned lock in a stage of its own, then copied
    assert "COPY web/package.json web/package-lock.json ./web/" in dockerfile
    assert (
        "COPY --from=assets /src/exporter/app/static/vendor ./exporter/app/static/vendor"
        in dockerfile
    )
    for link in (ROOT / "exporter" / "mixin").iterdir():
        if link.is_symlink():
            assert link.resolve().is_relative_to(ROOT), link
