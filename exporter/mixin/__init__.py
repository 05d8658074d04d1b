"""The monitoring mixin as the package ships it: the alerting rules (no recording rules:
docs/alerts.md says why), their promtool unit tests, the Grafana dashboards, and the rules
as a Kubernetes PrometheusRule.

The files are the repository's own (``prometheus/rules``, ``prometheus/tests``,
``grafana/dashboards``, linked here and copied into the wheel), so a pip user gets exactly
what the tests check.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

PARTS = {"rules": "*.yml", "tests": "*.test.yml", "dashboards": "*.json"}
PROMETHEUS_RULE = "kubernetes/prometheusrule.yaml"


def _files(part: str) -> list[Any]:
    folder = resources.files(__name__) / part
    pattern = PARTS[part].removeprefix("*")
    return sorted((f for f in folder.iterdir() if f.name.endswith(pattern)), key=lambda f: f.name)


def rule_groups() -> list[dict[str, Any]]:
    """Every rule group of the shipped rule files, in file order."""
    groups: list[dict[str, Any]] = []
    for rule_file in _files("rules"):
        groups.extend(yaml.safe_load(rule_file.read_text())["groups"])
    return groups


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (PromQL, descriptions) as ``|`` blocks, as the rule files have them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def prometheus_rule() -> str:
    """The rules as a prometheus-operator PrometheusRule (the same groups, unchanged)."""
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "runwatch", "labels": {"app.kubernetes.io/name": "runwatch"}},
        "spec": {"groups": rule_groups()},
    }
    header = (
        "# Generated from prometheus/rules/*.yml by `runwatch mixin export DIR` (it writes\n"
        "# DIR/kubernetes/prometheusrule.yaml): edit the rule files, not this.\n"
    )
    return header + yaml.dump(
        resource, Dumper=_BlockDumper, sort_keys=False, width=100, allow_unicode=True
    )


def export(directory: Path) -> list[Path]:
    """Write the mixin under ``directory``; the paths written."""
    written = []
    for part in PARTS:
        (directory / part).mkdir(parents=True, exist_ok=True)
        for source in _files(part):
            target = directory / part / source.name
            with resources.as_file(source) as path:
                shutil.copyfile(path, target)
            written.append(target)
    target = directory / PROMETHEUS_RULE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(prometheus_rule())
    written.append(target)
    return written
