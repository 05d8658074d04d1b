"""What a Prometheus operator expects of an exporter's HTTP side, in-process: any
Accept-Encoding header is answered. Against `runwatch serve`: tests/e2e/test_http_conventions.py."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from exporter.app.server import accepts_gzip


@given(st.text(max_size=60))
def test_any_accept_encoding_header_is_answered(header: str) -> None:
    assert accepts_gzip(header) in (True, False)
    assert accepts_gzip("gzip") and accepts_gzip("br, gzip;q=0.5") and not accepts_gzip("br")
    assert accepts_gzip("*;q=0, gzip") and accepts_gzip("*") and not accepts_gzip("gzip;Q=0")
    assert not accepts_gzip("gzip;q=0, *") and not accepts_gzip("gzip;q=x")
