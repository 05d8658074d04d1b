"""--web.config.file in the exporter-toolkit's format, against a real `runwatch serve`, real
openssl-made certificates and real TLS clients."""

from __future__ import annotations

import hashlib
import signal
import socket
import ssl
import subprocess
from pathlib import Path

import bcrypt
import httpx
import pytest
import yaml

from tests.support import RUNWATCH, free_port, wait_for


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def server_cert(
    directory: Path, name: str, ca: tuple[Path, Path] | None = None
) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (self-signed, or signed by ``ca``) and its key."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    if ca is None:
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key,
                "-out", cert)  # fmt: skip
        return cert, key
    request = directory / f"{name}.csr"
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", key,
            "-out", request)  # fmt: skip
    openssl("x509", "-req", "-in", request, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
            "-days", "1", "-out", cert)  # fmt: skip
    return cert, key


def ca_cert(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "ca.pem", directory / "ca.key"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=ca",
            "-addext", "basicConstraints=critical,CA:TRUE", "-keyout", key,
            "-out", cert)  # fmt: skip
    return cert, key


def write_config(path: Path, config: dict) -> None:
    staged = path.with_suffix(".tmp")
    staged.write_text(yaml.safe_dump(config))
    staged.replace(path)  # as an editor or a config manager replaces it


class Served:
    """`runwatch serve --web.config.file FILE` on a free port."""

    def __init__(self, tmp: Path, config: Path, host: str = "127.0.0.1") -> None:
        self.port = free_port()
        self.log = tmp / f"runwatch-{self.port}.log"
        self.process = subprocess.Popen(
            [*RUNWATCH, "serve", "--no-nvml", "--no-system", "--web.listen-address",
             f"{host}:{self.port}", "--web.config.file", str(config)],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(self._listening, what="runwatch listening")

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(self.log.read_text())
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def peer_certificate(self, context: ssl.SSLContext) -> bytes:
        """The DER certificate the server presents to a new connection."""
        with (
            socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            return tls.getpeercert(binary_form=True) or b""

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)


@pytest.fixture
def served(tmp_path: Path):
    servers: list[Served] = []

    def start(config: Path, host: str = "127.0.0.1") -> Served:
        servers.append(Served(tmp_path, config, host))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def fingerprint(pem: Path) -> bytes:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.read_text())).digest()


def trusting(*cas: Path) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for ca in cas:
        context.load_verify_locations(ca)
    return context


def test_a_rotated_certificate_is_served_to_the_next_connection(tmp_path, served) -> None:
    first = server_cert(tmp_path, "first")
    second = server_cert(tmp_path, "second")
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    cert.write_bytes(first[0].read_bytes())
    key.write_bytes(first[1].read_bytes())
    config = tmp_path / "web.yml"
    write_config(config, {"tls_server_config": {"cert_file": "live.pem", "key_file": "live.key"}})
    server = served(config)
    client = trusting(first[0], second[0])
    first_der = server.peer_certificate(client)
    assert hashlib.sha256(first_der).digest() == fingerprint(first[0])
    assert httpx.get(f"https://127.0.0.1:{server.port}/metrics", verify=client).status_code == 200

    # cert-manager style: the pair is replaced, the process is not told
    for source, target in ((second[1], key), (second[0], cert)):
        staged = target.with_suffix(".new")
        staged.write_bytes(source.read_bytes())
        staged.replace(target)
    wait_for(lambda: hashlib.sha256(server.peer_certificate(client)).digest()
             == fingerprint(second[0]), what="the new certificate served")  # fmt: skip
    assert "read again" in server.log.read_text()


def test_client_certificates_and_tls_versions(tmp_path, served) -> None:
    ca = ca_cert(tmp_path)
    cert, key = server_cert(tmp_path, "server")
    client_cert, client_key = server_cert(tmp_path, "client", ca)
    config = tmp_path / "web.yml"
    write_config(config, {"tls_server_config": {
        "cert_file": str(cert), "key_file": str(key), "client_ca_file": str(ca[0]),
        "client_auth_type": "RequireAndVerifyClientCert", "min_version": "TLS13",
    }})  # fmt: skip
    server = served(config)
    url = f"https://127.0.0.1:{server.port}/metrics"
    with_cert = trusting(cert)
    with_cert.load_cert_chain(client_cert, client_key)
    assert httpx.get(url, verify=with_cert).status_code == 200
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(url, verify=trusting(cert))  # no client certificate
    self_made = trusting(cert)
    self_made.load_cert_chain(*server_cert(tmp_path, "stranger"))  # not signed by the CA
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(url, verify=self_made)
    old = trusting(cert)
    old.load_cert_chain(client_cert, client_key)
    old.maximum_version = ssl.TLSVersion.TLSv1_2  # below min_version
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, verify=old)


def test_only_a_server_that_asks_for_no_credentials_warns_on_every_interface(
    tmp_path, served
) -> None:
    ca = ca_cert(tmp_path)
    cert, key = server_cert(tmp_path, "server")
    tls = {"cert_file": str(cert), "key_file": str(key)}
    verified, plain = tmp_path / "verified.yml", tmp_path / "plain.yml"
    write_config(verified, {"tls_server_config": {
        **tls, "client_ca_file": str(ca[0]),
        "client_auth_type": "RequireAndVerifyClientCert"}})  # fmt: skip
    write_config(plain, {"tls_server_config": tls})
    asks, open_ = served(verified, "0.0.0.0"), served(plain, "0.0.0.0")
    wait_for(lambda: "without credentials" in open_.log.read_text(), what="the warning")
    assert "without credentials" not in asks.log.read_text()


def test_bcrypt_users_headers_and_a_file_that_changes(tmp_path, served) -> None:
    alice = bcrypt.hashpw(b"wonderland", bcrypt.gensalt(rounds=4)).decode()
    # htpasswd -nBC writes $2y$, the toolkit's documented form: the same algorithm
    bob = "$2y$" + bcrypt.hashpw(b"builder", bcrypt.gensalt(rounds=4)).decode()[4:]
    config = tmp_path / "web.yml"
    headers = {"X-Frame-Options": "deny", "X-Content-Type-Options": "nosniff"}
    write_config(config, {"basic_auth_users": {"alice": alice, "bob": bob},
                          "http_server_config": {"headers": headers}})  # fmt: skip
    server = served(config)
    base = f"http://127.0.0.1:{server.port}"
    assert httpx.get(base + "/metrics", auth=("alice", "wonderland")).status_code == 200
    answer = httpx.get(base + "/metrics", auth=("bob", "builder"))
    assert answer.status_code == 200 and answer.headers["x-frame-options"] == "deny"
    assert httpx.get(base + "/metrics", auth=("bob", "wonderland")).status_code == 401
    assert httpx.get(base + "/metrics", auth=("mallory", "x")).status_code == 401
    refused = httpx.get(base + "/api/runs")
    assert refused.status_code == 401 and refused.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(base + "/healthz").status_code == 200  # probes need no password

    write_config(config, {"basic_auth_users": {"alice": alice}})  # bob removed
    wait_for(lambda: httpx.get(base + "/metrics", auth=("bob", "builder")).status_code == 401,
             what="bob refused")  # fmt: skip
    assert httpx.get(base + "/metrics", auth=("alice", "wonderland")).status_code == 200

    config.write_text("basic_auth_users: [not, a, mapping]\n")  # broken while running
    wait_for(lambda: httpx.get(base + "/metrics", auth=("alice", "wonderland")).status_code
             == 500, what="a broken file refused")  # fmt: skip
    write_config(config, {"basic_auth_users": {"alice": alice}})
    wait_for(lambda: httpx.get(base + "/metrics", auth=("alice", "wonderland")).status_code
             == 200, what="the mended file used")  # fmt: skip


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("tls_server_config:\n  cert_file: missing.pem\n  key_file: missing.key\n", "No such file"),
        ("basic_auth_users:\n  alice: plain-text\n", "not a bcrypt hash"),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: "
            "RequireAnyClientCert\n",
            "RequireAndVerifyClientCert",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [x]\n",
            "cipher_suites is not supported",
        ),
        ("basic_auth_user:\n  alice: x\n", "unknown field(s) basic_auth_user"),
        ("tls_server_config: [\n", "line 2, column 1"),
    ],
)
def test_a_bad_web_config_is_one_line_and_exit_2(tmp_path, content: str, says: str) -> None:
    config = tmp_path / "web.yml"
    config.write_text(content)
    result = subprocess.run(
        [*RUNWATCH, "serve", "--no-nvml", "--web.listen-address", f"127.0.0.1:{free_port()}",
         "--web.config.file", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr
    assert result.stderr.startswith(f"runwatch: web config file {config}")


def test_the_legacy_flags_and_the_file_do_not_mix(tmp_path) -> None:
    config = tmp_path / "web.yml"
    config.write_text("{}\n")
    result = subprocess.run(
        [*RUNWATCH, "serve", "--no-nvml", "--web.config.file", str(config), "--tls-cert-file",
         "c", "--tls-key-file", "k"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--web.config.file replaces --tls-cert-file, --tls-key-file" in result.stderr


def test_sighup_is_logged_not_fatal(tmp_path) -> None:
    port = free_port()
    log = tmp_path / "log"
    process = subprocess.Popen(
        [*RUNWATCH, "serve", "--no-nvml", "--no-system", "--web.listen-address",
         f"127.0.0.1:{port}"], stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: "listening on" in log.read_text(), what="listening")
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200)
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP" in log.read_text(), what="SIGHUP logged")
        assert process.poll() is None
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=15)
