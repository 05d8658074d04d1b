"""The ``runwatch`` command: help, configuration precedence, errors, replay and demo."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from exporter.app.config import OPTIONS, ConfigError
from tests.support import ROOT, RUNWATCH, event, free_port, jsonl, settings_for, wait_for


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*RUNWATCH, *args], capture_output=True, text=True, cwd=ROOT, timeout=60, **kwargs
    )


def test_help_lists_every_option_with_its_environment_variable() -> None:
    text = run("serve", "--help").stdout
    for option in OPTIONS:
        assert option.flag in text and option.env in text


COMMANDS = ("serve", "replay", "demo", "dashboards", "router", "schema", "mixin")


def test_every_help_names_each_command_once_in_plain_words() -> None:
    top = run("--help").stdout
    for command in COMMANDS:
        assert len(re.findall(rf"^    {command}\b", top, re.M)) == 1, command
    assert "RUNWATCH_EVENTS=a.jsonl,b.jsonl" in top  # the list form of the environment
    helps = [top, *(run(command, "--help").stdout for command in COMMANDS)]
    bridge = [*RUNWATCH[:-1], "exporter.simulate.reference_bridge", "--help"]
    helps.append(subprocess.run(bridge, capture_output=True, text=True, cwd=ROOT).stdout)
    for text in helps:
        assert not re.search(r"seed \d|``|:class:|:func:", text, re.I), text


def test_router_check_counts_in_words() -> None:
    said = run("router", "check").stdout.splitlines()[0]
    assert re.search(r"\b1 flow\b", said) and not re.search(r"\b1 \w+s\b", said), said


def test_source_switches_come_from_flags_environment_or_file(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "runwatch.yaml"
    config.write_text("nvml: false\nfake_gpus: 2\n")
    settings = settings_for(["--config", str(config)], {}, monkeypatch)
    assert (settings.nvml, settings.fake_gpus, settings.system) == (False, 2, True)
    settings = settings_for(
        ["--config", str(config), "--nvml", "--no-system"],
        {"RUNWATCH_GPU_INTERVAL": "0.5", "RUNWATCH_OTLP_NAMING": "prometheus"},
        monkeypatch,
    )
    assert (settings.nvml, settings.system, settings.gpu_interval) == (True, False, 0.5)
    assert settings.otlp_naming == "prometheus"
    negative = run("serve", "--fake-gpus", "-1")
    assert negative.returncode == 2 and negative.stderr == "runwatch: --fake-gpus: -1 is negative\n"
    naming = run("serve", "--otlp-naming", "otel")
    assert naming.returncode == 2 and "is not one of semconv, prometheus" in naming.stderr


@pytest.mark.parametrize("text", ["0", "-1h", "abc", "h", "nan", "inf", "24x"])
def test_a_bad_retention_is_one_clear_line(text: str) -> None:
    refused = run("serve", f"--finished-run-retention={text}")
    assert refused.returncode == 2
    assert refused.stderr.startswith("runwatch: --finished-run-retention: ")
    assert refused.stderr.count("\n") == 1


def test_bad_settings_are_one_clear_line(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ConfigError, match="RUNWATCH_MAX_RUNS: -3 is not positive"):
        settings_for([], {"RUNWATCH_MAX_RUNS": "-3"}, monkeypatch)
    monkeypatch.delenv("RUNWATCH_MAX_RUNS")
    config = tmp_path / "bad.yaml"
    config.write_text("max_runz: 3\n")
    result = run("serve", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("runwatch: config file")
    assert "unknown option(s) max_runz" in result.stderr
    bad_listen = run("serve", "--listen", "nowhere")
    assert bad_listen.returncode == 2 and "is not HOST:PORT" in bad_listen.stderr
    no_cert = run("serve", "--tls-cert-file", str(tmp_path / "c"), "--tls-key-file", "k")
    assert no_cert.returncode == 2 and no_cert.stderr.startswith("runwatch: TLS (--tls-cert-file")
    assert "Traceback" not in no_cert.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["--otlp-protocol", "thrift"],
            "--otlp-protocol: 'thrift' is not one of grpc, http/protobuf",
        ),
        (["--max-runs", "abc"], "--max-runs: 'abc' is not a whole number"),
        (["--gpu-interval", "soon"], "--gpu-interval: 'soon' is not a number"),
        (["--finished-run-retention", "7x"], "'7x' is not a positive duration"),
        (["--web.telemetry-path", "/healthz"], "/healthz is taken by another endpoint"),
        (["--log.format", "xml"], "--log.format: 'xml' is not one of logfmt, json"),
    ],
)
def test_each_bad_value_is_one_line_and_exit_2(args: list[str], says: str) -> None:
    result = run("serve", "--no-nvml", *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"runwatch: {says}\n" or (
        result.stderr.count("\n") == 1 and says in result.stderr
    ), result.stderr


def test_a_yaml_error_names_the_file_and_the_place_on_one_line(tmp_path: Path) -> None:
    config = tmp_path / "runwatch.yaml"
    config.write_text("max_runs: 3\nevents: [a.jsonl\n  pid_file: x\n")
    result = run("serve", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"runwatch: config file {config}: not valid YAML: line 3,")
    assert "<unicode string>" not in result.stderr


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_port_in_use_is_one_line_and_exit_2_before_anything_starts(command: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = set(Path(tempfile.gettempdir()).glob("runwatch-demo-*"))
        result = run(command, "--no-nvml", "--web.listen-address", f"127.0.0.1:{port}")
    assert result.returncode == 2
    assert result.stderr == f"runwatch: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert result.stdout == ""  # no banner pointing at the other process
    assert set(Path(tempfile.gettempdir()).glob("runwatch-demo-*")) == before  # removed


def test_replay_prints_the_exposition(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        jsonl(event("progress", stage="ranking", progress_pct=50))
        + b"garbage\n"
        + b'{"event_type": "progress", "run_id": "run_1", "time'
    )
    result = run("replay", str(path))
    assert result.returncode == 0, result.stderr
    assert 'training_run_progress_ratio{run_id="run_1",stage="ranking"} 0.5' in result.stdout
    assert (
        'runwatch_events_rejected_total{reason="invalid_json",source="jsonl"} 2.0' in result.stdout
    )  # the garbage line and the truncated last line


def test_replay_of_a_missing_or_unreadable_file_is_exit_2(tmp_path: Path) -> None:
    missing = run("replay", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"runwatch: {tmp_path / 'nope.jsonl'}: no such file"
    directory = run("replay", str(tmp_path))
    assert directory.returncode == 2 and directory.stderr.count("\n") == 1


def test_replay_expands_a_glob_the_shell_did_not(tmp_path: Path) -> None:
    """Quoted, or from RUNWATCH_ROUTER_EVENTS: each file matched, in name order; a glob
    that matches nothing is a missing file."""
    for name, stage in (("b.jsonl", "second"), ("a.jsonl", "first")):
        (tmp_path / name).write_bytes(jsonl(event("progress", stage=stage, progress_pct=50)))
    routed = b'{"event_type": "HOST_ONLINE", "timestamp": 1767225601.0, "payload": {}}\n'
    for name in ("r1.jsonl", "r2.jsonl"):
        (tmp_path / name).write_bytes(routed)
    environment = {**os.environ, "RUNWATCH_ROUTER_EVENTS": str(tmp_path / "r*.jsonl")}
    result = run("replay", str(tmp_path / "[ab].jsonl"), env=environment)
    assert result.returncode == 0, result.stderr
    for stage in ("first", "second"):
        assert f'training_run_progress_ratio{{run_id="run_1",stage="{stage}"}} 0.5' in (
            result.stdout
        )
    assert 'router_events_total{category="cluster",event_type="HOST_ONLINE"} 2.0' in result.stdout
    nothing = run("replay", str(tmp_path / "none*.jsonl"))
    assert nothing.returncode == 2
    assert nothing.stderr.strip() == f"runwatch: {tmp_path / 'none*.jsonl'}: no such file"


def test_demo_serves_a_training_run(tmp_path: Path) -> None:
    port = free_port()
    demo = subprocess.Popen(
        [*RUNWATCH, "demo", "--listen", f"127.0.0.1:{port}", "--event-interval", "0.005"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(
            lambda: 'status="completed"} 1.0' in httpx.get(url + "/metrics").text,
            timeout=60,
            what="a completed demo run",
        )
        text = httpx.get(url + "/metrics").text
        for needle in (
            "training_checkpoint_best",
            'key="loss"',
            "training_target_best_auc",
            'error_type="DataWarning"',
            "trading_portfolio_value ",  # from the reference bridge the demo runs
            'trading_engine_stage{stage="',
        ):
            assert needle in text
    finally:
        demo.terminate()
        output = demo.communicate(timeout=30)[0]
    assert output.startswith(f"runwatch demo: open {url}/ ")  # the view first, then the rest
    assert f"{url}/metrics" in output
    written = re.search(r"is being written to (\S+)", output)
    assert written and not Path(written.group(1)).parent.exists()  # its folder removed
