"""--web.config.file in-process: any YAML value is a config or a one-line error. Against
a real `runwatch serve` and real TLS clients: tests/e2e/test_web_config.py."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.app.web_config import WebConfigError, parse_web_config

KEYS = st.sampled_from([
    "tls_server_config", "basic_auth_users", "http_server_config", "headers", "cert_file",
    "key_file", "client_auth_type", "min_version", "X-Frame-Options", "http2", "alice",
]) | st.text(max_size=8)  # fmt: skip


YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)


@given(YAML_VALUES)
@settings(max_examples=300, deadline=None)
def test_any_yaml_value_is_a_config_or_a_web_config_error(value) -> None:
    try:
        parse_web_config(value, "web config file x", Path("/nonexistent"))
    except WebConfigError as exc:
        assert "\n" not in str(exc)
