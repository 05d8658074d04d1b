"""Settings: one typed, frozen field per option, and the options derived from them."""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing

import pytest

from exporter.app.config import OPTIONS, Settings, add_arguments, listen_address, resolve

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
