"""The web configuration of ``--web.config.file``, in the Prometheus exporter-toolkit's format.

One file, as node_exporter reads it: ``tls_server_config`` (certificate and key, client
certificates, TLS versions), ``basic_auth_users`` (bcrypt hashes), ``http_server_config``
(response headers) and ``rate_limit`` (one token bucket for all requests). As in the
toolkit, it is read again whenever it (or a certificate, key or CA file it names) changes,
checked for each new connection and request, so a rotated certificate or a removed user
applies without a restart; a file that turns bad refuses connections (TLS) and answers 500
(HTTP) until it is mended, as the toolkit does.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.app.config import ConfigError, read_yaml_file
from exporter.app.rate_limit import RateLimit
from exporter.pipeline.regular_files import read_regular

log = logging.getLogger(__name__)

MAX_WEB_CONFIG_BYTES = 1 << 20

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
CLIENT_AUTH_TYPES = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")
TLS_KEYS = {
    "cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type", "client_ca_file",
    "min_version", "max_version", "prefer_server_cipher_suites",
}  # fmt: skip
UNSUPPORTED_TLS_KEYS = {
    "cipher_suites": "OpenSSL's defaults for the TLS version apply",
    "curve_preferences": "OpenSSL's defaults apply",
    "client_allowed_sans": "check the client certificate's subject with a CA of its own",
}
HEADERS = {  # the headers the toolkit lets a file set, with the values it accepts
    "Content-Security-Policy": None,
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}
BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
GO_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
                     "m": 60.0, "h": 3600.0}  # fmt: skip
GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class WebConfigError(ConfigError):
    """A web configuration that cannot be used; at start, one line on stderr and exit 2."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    cert_file: str | None = None
    key_file: str | None = None
    cert: str | None = None  # inline PEM
    key: str | None = None
    client_ca_file: str | None = None
    client_ca: str | None = None
    client_auth_type: str = "NoClientCert"
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    prefer_server_cipher_suites: bool = True

    @property
    def files(self) -> list[str]:
        return [f for f in (self.cert_file, self.key_file, self.client_ca_file) if f]


@dataclass(frozen=True, slots=True)
class WebConfig:
    tls: TlsSettings | None = None
    users: dict[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash
    headers: dict[str, str] = field(default_factory=dict)
    rate_limit: RateLimit | None = None


def parse_web_config(data: Any, where: str, base: Path) -> WebConfig:
    """A WebConfig from the file's YAML value; relative paths are the file's neighbours."""
    if data is None:
        return WebConfig()
    top = _mapping(data, where)
    _known(top, {"tls_server_config", "basic_auth_users", "http_server_config", "rate_limit"},
           where)  # fmt: skip
    tls = None
    if top.get("tls_server_config") is not None:
        tls = _tls(_mapping(top["tls_server_config"], f"{where}: tls_server_config"), where, base)
    users = {}
    for user, hashed in _mapping(top.get("basic_auth_users") or {}, where).items():
        if not isinstance(hashed, str) or not hashed.startswith(BCRYPT_PREFIXES):
            raise WebConfigError(f"{where}: basic_auth_users: {user}: not a bcrypt hash "
                                 "(htpasswd -nBC 10 \"\" | tr -d ':\\n' makes one)")  # fmt: skip
        users[str(user)] = hashed.encode()
    http = _mapping(top.get("http_server_config") or {}, f"{where}: http_server_config")
    _known(http, {"http2", "headers"}, f"{where}: http_server_config")
    headers = {}
    for name, value in _mapping(http.get("headers") or {}, f"{where}: headers").items():
        if name not in HEADERS:
            raise WebConfigError(f"{where}: headers: {name} is not one of {', '.join(HEADERS)}")
        allowed = HEADERS[name]
        if value in ("", None):
            continue
        if allowed is not None and str(value).lower() not in allowed:
            raise WebConfigError(f"{where}: headers: {name}: {value!r} is not one of "
                                 f"{', '.join(allowed)}")  # fmt: skip
        headers[name] = str(value)
    limit = _rate_limit(_mapping(top.get("rate_limit") or {}, f"{where}: rate_limit"), where)
    return WebConfig(tls, users, headers, limit)


def _rate_limit(section: dict[str, Any], where: str) -> RateLimit | None:
    """The toolkit's ``rate_limit``: off while ``interval`` is 0 or absent."""
    where = f"{where}: rate_limit"
    _known(section, {"interval", "burst"}, where)
    interval = _go_duration(section.get("interval", 0), f"{where}: interval")
    burst = section.get("burst", 0)
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 0:
        raise WebConfigError(f"{where}: burst: expected a whole number, 0 or more")
    if interval == 0:
        return None
    if burst == 0:
        raise WebConfigError(f"{where}: burst 0 with an interval refuses every request; "
                             "give burst: 1 or more")  # fmt: skip
    return RateLimit(interval, burst)


def _go_duration(value: Any, where: str) -> float:
    """Seconds of a duration as Go writes it (1s, 500ms, 1m30s); 0 alone needs no unit."""
    text = str(value).strip()
    if text == "0":
        return 0.0
    if isinstance(value, str) and re.fullmatch(f"(?:{GO_DURATION_PART.pattern})+", text):
        return sum(float(n) * GO_DURATION_UNITS[u] for n, u in GO_DURATION_PART.findall(text))
    raise WebConfigError(f"{where}: {value!r} is not a duration such as 1s, 500ms or 1m")


def _tls(section: dict[str, Any], where: str, base: Path) -> TlsSettings:
    where = f"{where}: tls_server_config"
    for key, why in UNSUPPORTED_TLS_KEYS.items():
        if section.get(key):
            raise WebConfigError(f"{where}: {key} is not supported by runwatch ({why})")
    _known(section, TLS_KEYS | set(UNSUPPORTED_TLS_KEYS), where)
    strings = {}
    for key in TLS_KEYS - {"prefer_server_cipher_suites"}:
        value = section.get(key)
        if value is not None and not isinstance(value, str):
            raise WebConfigError(f"{where}: {key}: expected a string")
        if value and key.endswith("_file"):
            value = str(base / value)
        strings[key] = value or None
    if bool(strings["cert_file"]) == bool(strings["cert"]):
        raise WebConfigError(f"{where}: give cert_file or cert (one of them)")
    if bool(strings["key_file"]) == bool(strings["key"]):
        raise WebConfigError(f"{where}: give key_file or key (one of them)")
    auth = strings["client_auth_type"] or "NoClientCert"
    if auth in UNVERIFIED_CLIENT_AUTH:
        raise WebConfigError(f"{where}: client_auth_type {auth} accepts certificates nobody "
                             "checked; use RequireAndVerifyClientCert")  # fmt: skip
    if auth not in CLIENT_AUTH_TYPES:
        raise WebConfigError(f"{where}: client_auth_type {auth!r} is not one of "
                             f"{', '.join(CLIENT_AUTH_TYPES)}")  # fmt: skip
    has_ca = bool(strings["client_ca_file"] or strings["client_ca"])
    if has_ca != (auth != "NoClientCert"):
        raise WebConfigError(f"{where}: client_ca_file (or client_ca) and a client_auth_type "
                             "that verifies go together")  # fmt: skip
    for key in ("min_version", "max_version"):
        if strings[key] is not None and strings[key] not in TLS_VERSIONS:
            raise WebConfigError(f"{where}: {key} {strings[key]!r} is not one of "
                                 f"{', '.join(TLS_VERSIONS)}")  # fmt: skip
    prefer = section.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        raise WebConfigError(f"{where}: prefer_server_cipher_suites: expected true or false")
    return TlsSettings(
        cert_file=strings["cert_file"],
        key_file=strings["key_file"],
        cert=strings["cert"],
        key=strings["key"],
        client_ca_file=strings["client_ca_file"],
        client_ca=strings["client_ca"],
        client_auth_type=auth,
        min_version=strings["min_version"] or "TLS12",
        max_version=strings["max_version"] or "TLS13",
        prefer_server_cipher_suites=prefer,
    )


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WebConfigError(f"{where}: expected a mapping")
    return value


def _known(section: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(k if isinstance(k, str) and k.isidentifier() else repr(k)
                     for k in set(section) - known)  # fmt: skip
    if unknown:
        raise WebConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")


def load_web_config(path: str) -> WebConfig:
    where = f"web config file {path}"
    data = read_yaml_file(path, MAX_WEB_CONFIG_BYTES, where, WebConfigError)
    config = parse_web_config(data, where, Path(path).resolve().parent)
    if config.tls is not None:
        tls_context(config.tls, where)  # fails here, on one line, not at the first client
    return config


def tls_context(tls: TlsSettings, where: str = "TLS") -> ssl.SSLContext:
    """A server context for these settings; WebConfigError when a file or PEM is bad."""
    for name in ("cert_file", "key_file", "client_ca_file"):
        path = getattr(tls, name)
        try:
            if path:
                read_regular(path, MAX_WEB_CONFIG_BYTES)
        except OSError as exc:
            raise WebConfigError(f"{where}: {name} {path}: {exc.strerror or exc}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        if tls.cert is not None or tls.key is not None:
            _load_inline_chain(context, tls)
        else:
            context.load_cert_chain(tls.cert_file or "", tls.key_file)
        context.verify_mode = CLIENT_AUTH_TYPES[tls.client_auth_type]
        if tls.client_ca_file or tls.client_ca:
            context.load_verify_locations(cafile=tls.client_ca_file, cadata=tls.client_ca)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise WebConfigError(f"{where}: certificate, key or client CA: {exc}") from None
    return context


def _load_inline_chain(context: ssl.SSLContext, tls: TlsSettings) -> None:
    """load_cert_chain reads files only: inline PEM goes through a private temporary file."""
    with tempfile.TemporaryDirectory(prefix="runwatch-tls-") as directory:
        cert = tls.cert_file or os.path.join(directory, "cert.pem")
        key = tls.key_file or os.path.join(directory, "key.pem")
        if tls.cert is not None:
            Path(cert).write_text(tls.cert)
        if tls.key is not None:
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(tls.key)
        context.load_cert_chain(cert, key)


def _signature(paths: list[str]) -> tuple[tuple[int, int, int, int] | None, ...]:
    """What changes when a file is rewritten, replaced or rotated."""
    out: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            info = os.stat(path)
            out.append((info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


class LiveWebConfig:
    """The web configuration as it is now: the file's (re-read when it or a file it names
    changes) or, without a file, the one the legacy flags gave, whose certificate files are
    watched the same way."""

    def __init__(self, path: str | None, fixed: WebConfig | None = None) -> None:
        self.path = path
        self._config = load_web_config(path) if path else (fixed or WebConfig())
        self.tls_at_start = self._config.tls is not None
        self._where = path or "TLS (--tls-cert-file, --tls-key-file)"
        self._context = tls_context(self._config.tls, self._where) if self._config.tls else None
        self._signature = self._watched_signature()
        self._error: WebConfigError | None = None

    def _watched_signature(self) -> tuple[Any, ...]:
        files = self._config.tls.files if self._config.tls else []
        return _signature([self.path, *files] if self.path else files)

    def current(self) -> WebConfig:
        """The configuration now; WebConfigError while the file is bad (after a change)."""
        self._refresh()
        if self._error is not None:
            raise self._error
        return self._config

    def tls(self) -> ssl.SSLContext | None:
        """The TLS context for a new connection; None while the configuration is bad or
        names no TLS (the connection is then refused)."""
        self._refresh()
        return None if self._error is not None else self._context

    def _refresh(self) -> None:
        signature = self._watched_signature()
        if signature == self._signature:
            return
        self._signature = signature
        try:
            config = load_web_config(self.path) if self.path else self._config
            context = tls_context(config.tls, self._where) if config.tls else None
        except WebConfigError as exc:
            log.error("%s; refusing connections until it is mended", exc)
            self._error = exc
            return
        log.info("web configuration %s read again: it or a file it names changed",
                 self.path or "of the TLS flags")  # fmt: skip
        if (config.tls is not None) != self.tls_at_start:
            log.warning("web configuration: TLS was %s at start; restart runwatch to %s",
                        "on" if self.tls_at_start else "off",
                        "serve plain HTTP" if self.tls_at_start else "serve HTTPS")  # fmt: skip
        self._config, self._context, self._error = config, context, None
        self._signature = self._watched_signature()  # the files the new one names


class ReloadingServerContext(ssl.SSLContext):
    """The SSLContext given to the server: each connection is wrapped by the context of the
    web configuration as it is at that moment (asyncio wraps every connection through
    ``wrap_bio``), so certificates, client CAs and TLS versions apply as they change."""

    live: LiveWebConfig

    def __new__(cls, live: LiveWebConfig) -> ReloadingServerContext:
        context = super().__new__(cls, ssl.PROTOCOL_TLS_SERVER)
        context.live = live
        return context

    def __init__(self, live: LiveWebConfig) -> None:
        super().__init__()

    def wrap_bio(self, incoming: Any, outgoing: Any, server_side: bool = False,
                 server_hostname: Any = None, session: Any = None) -> ssl.SSLObject:  # fmt: skip
        # self has no certificate: while the configuration is bad, the handshake fails
        context = self.live.tls()
        if context is None:
            return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        return context.wrap_bio(incoming, outgoing, server_side, server_hostname, session)
