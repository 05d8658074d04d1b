"""The Prometheus rules: promtool checks the config and rules and runs the unit tests, and
vmalert-tool runs the same unit tests through vmalert's engine (the scale variant's
evaluator, which must answer alike); every alert has a test that fires it beside series
that must stay quiet, a runbook in docs/alerts.md, and only metrics runwatch exposes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from exporter.telemetry.catalogue import documented_metrics
from tests.support import ROOT

PROMETHEUS = ROOT / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.yml"))

DOCUMENTED = documented_metrics()  # the catalogue and the built-in router mapping's

RUNBOOKS = "https://github.com/runwatch/runwatch/blob/main/docs/alerts.md"


def promtool(bin_dir: Path, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([bin_dir / "promtool", *map(str, args)], capture_output=True, text=True)


def rules() -> list[dict]:
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]  # fmt: skip


def test_promtool_accepts_the_config_and_the_rules(bin_dir: Path) -> None:
    config = promtool(bin_dir, "check", "config", PROMETHEUS / "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    checked = promtool(bin_dir, "check", "rules", *RULE_FILES)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_unit_tests_pass(bin_dir: Path) -> None:
    result = promtool(bin_dir, "test", "rules", *TEST_FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_vmalert_passes_the_same_unit_tests(bin_dir: Path, tmp_path: Path) -> None:
    """vmalert labels alerts as Prometheus does with -disableAlertgroupLabel (compose.scale
    runs it so); increase() of a new series differs between the two, which the rules
    avoid by counting new series explicitly."""
    result = subprocess.run(
        [bin_dir / "vmalert-tool", "unittest", "-disableAlertgroupLabel",
         *(f"--files={path}" for path in TEST_FILES)],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_quiet_and_has_a_runbook() -> None:
    alerts = [rule for rule in rules() if "alert" in rule]
    tests = [test for path in TEST_FILES for test in yaml.safe_load(path.read_text())["tests"]]
    runbooks = (ROOT / "docs" / "alerts.md").read_text()
    assert len(alerts) >= 18
    for alert in alerts:
        name = alert["alert"]
        cases = [(test, case) for test in tests for case in test["alert_rule_test"]
                 if case["alertname"] == name]  # fmt: skip
        firing = [(t, c) for t, c in cases if c["exp_alerts"]]
        assert firing, f"{name}: no test where it fires"
        test, case = firing[0]
        assert len(test["input_series"]) > len(case["exp_alerts"]), f"{name}: no quiet series"
        assert {"severity"} <= set(alert["labels"]) and alert["labels"]["severity"] in (
            "warning", "critical")  # fmt: skip
        assert {"summary", "description", "runbook_url"} <= set(alert["annotations"])
        page, anchor = alert["annotations"]["runbook_url"].rsplit("#", 1)
        assert page == RUNBOOKS and anchor == name.lower(), f"{name}: not its runbook's address"
        assert f"\n## {name}\n" in runbooks, f"{name}: no runbook"


def test_rules_only_use_metrics_runwatch_exposes() -> None:
    exposed = {metric.name for metric in DOCUMENTED}
    exposed |= {f"{m.name}_{suffix}" for m in DOCUMENTED for suffix in ("bucket", "sum", "count")}
    prefixes = ("training_", "trading_", "gpu_", "runwatch_", "system_", "process_", "router_")
    for rule in rules():
        for name in re.findall(r"\b[a-z_]+(?=\s*[{\[)]|\s*[<>=!/*+-]|\s*$|\s+and\b)", rule["expr"]):
            if name.startswith(prefixes):
                assert name in exposed, f"{rule.get('alert') or rule['record']}: {name}"
