"""Settings: one typed, frozen field per option, the options derived from them, and how
flags, environment and file resolve them."""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from pathlib import Path

import pytest

from exporter.app.config import OPTIONS, Settings, add_arguments, listen_address, resolve
from tests.support import settings_for

pytestmark = pytest.mark.unit

HINTS = typing.get_type_hints(Settings)


def test_every_field_is_an_option_and_settings_are_frozen() -> None:
    assert [o.name for o in OPTIONS] == [f.name for f in dataclasses.fields(Settings)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().max_runs = 1  # type: ignore[misc]


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_each_default_has_its_declared_type(option) -> None:
    hint = HINTS[option.name]
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    origins = tuple(typing.get_origin(t) or t for t in allowed)
    assert isinstance(option.default, origins), (option.name, hint, option.default)
    if option.many:
        (item,) = typing.get_args(hint)
        assert all(isinstance(v, typing.get_origin(item) or item) for v in option.default)


@pytest.mark.parametrize("option", [o for o in OPTIONS if o.default not in (None, [])],
                         ids=lambda o: o.name)  # fmt: skip
def test_each_default_written_as_its_variable_reads_back(option, monkeypatch) -> None:
    """What --help shows as the default, set in the environment, is the default again."""
    values = option.default if option.many else [option.default]
    written = [listen_address(*v) if option.name == "listen" else str(v) for v in values]
    monkeypatch.setenv(option.env, ",".join(written))
    parser = argparse.ArgumentParser()
    add_arguments(parser, [option.name])
    settings = resolve(parser.parse_args([]), [option.name])
    assert getattr(settings, option.name) == option.default


def test_list_defaults_are_not_shared() -> None:
    first, second = Settings(), Settings()
    first.events.append("a.jsonl")
    assert second.events == [] and Settings().events == []


SIZES = [("1MiB", 1 << 20), ("64KiB", 65536), ("2MB", 2_000_000), ("1000", 1000),
         ("1.5 GiB", 3 << 29)]  # fmt: skip


@pytest.mark.parametrize(("given", "size"), SIZES)
def test_byte_sizes_take_units_from_flags_and_yaml(given, size, tmp_path) -> None:
    names = ["max_body_bytes", "max_response_bytes"]
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")  # as the CLI adds it
    add_arguments(parser, names)
    config = tmp_path / "runwatch.yml"
    config.write_text(f"max_response_bytes: {given}\n")
    settings = resolve(parser.parse_args(["--max-body-bytes", given, "--config", str(config)]),
                       names)  # fmt: skip
    assert settings.max_body_bytes == size and settings.max_response_bytes == size


@pytest.mark.parametrize("given", ["1mb", "MiB", "0", "-1", "1 MiBs"])
def test_a_size_runwatch_cannot_read_is_refused_naming_the_units(given) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, ["max_body_bytes"])
    with pytest.raises(Exception, match="max-body-bytes") as refused:
        resolve(parser.parse_args(["--max-body-bytes", given]), ["max_body_bytes"])
    assert "MiB" in str(refused.value) or "positive" in str(refused.value)


def test_serve_knows_the_sdk_variables_and_warns_of_the_others(monkeypatch) -> None:
    from runwatch_sdk.places import SDK_VARIABLES

    from exporter.app.config import SDK_VARIABLES as KNOWN_TO_SERVE
    from exporter.app.config import unknown_variables

    assert set(SDK_VARIABLES) == KNOWN_TO_SERVE  # they share the RUNWATCH_ namespace
    for name in list(os.environ):
        if name.startswith("RUNWATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("RUNWATCH_URL", "http://runwatch:19464")  # the SDK's, in serve's shell
    monkeypatch.setenv("RUNWATCH_MAX_SERIES", "10")  # an option
    monkeypatch.setenv("RUNWATCH_EVENT", "a.jsonl")
    assert unknown_variables() == [
        "RUNWATCH_EVENT is set but is no runwatch variable (did you mean RUNWATCH_EVENTS?)"
    ]


def test_flags_beat_environment_beats_file(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "runwatch.yaml"
    config.write_text(
        "max_runs: 7\nmax_targets_per_run: 8\nmax_metric_keys_per_run: 9\n"
        "events: [a.jsonl, b.jsonl]\nlisten: 0.0.0.0:9999\n"
    )
    settings = settings_for(
        ["--config", str(config), "--max-runs", "1"],
        {"RUNWATCH_MAX_RUNS": "2", "RUNWATCH_MAX_TARGETS_PER_RUN": "3"},
        monkeypatch,
    )
    assert (
        settings.max_runs,
        settings.max_targets_per_run,
        settings.max_metric_keys_per_run,
    ) == (1, 3, 9)
    assert settings.events == ["a.jsonl", "b.jsonl"]
    assert settings.listen == [("0.0.0.0", 9999)]
    assert settings.max_checkpoints_per_run == 50  # the default


@pytest.mark.parametrize(("text", "seconds"),
                         [("90", 90), ("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800),
                          ("1.5h", 5400)])  # fmt: skip
def test_the_retention_takes_durations_as_prometheus_writes_them(
    text, seconds, monkeypatch
) -> None:
    settings = settings_for(["--finished-run-retention", text], {}, monkeypatch)
    assert settings.finished_run_retention == seconds
    assert settings_for([], {}, monkeypatch).finished_run_retention == 86400  # 24 h
