"""postconf, promtool, headless Chromium and the DKIM verifier are real and work here."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.services.bind import BindServer, zone_text
from tests.services.tools import Chromium, dkim_dnsfunc, run_postconf, run_promtool


def test_postconf_reads_a_rendered_folder(postconf_bin: Path, tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text(
        "myhostname = n1.mail.test\n"
        "smtpd_tls_security_level = may\n"
        "default_destination_concurrency_limit = 20\n"
        "smtp_destination_concurency_limit = 5\n"  # misspelt on purpose
    )
    (tmp_path / "master.cf").write_text(
        "smtp      inet  n       -       y       -       -       smtpd\n"
        "submission inet n       -       y       -       -       smtpd\n"
        "  -o smtpd_tls_security_level=encrypt\n"
    )

    listed = run_postconf(postconf_bin, tmp_path, "-n")
    hostname = run_postconf(postconf_bin, tmp_path, "-h", "myhostname")
    services = run_postconf(postconf_bin, tmp_path, "-M")

    assert listed.returncode == 0, listed.stderr
    assert "default_destination_concurrency_limit = 20" in listed.stdout.splitlines()
    assert "unused parameter: smtp_destination_concurency_limit=5" in listed.stderr
    assert hostname.stdout == "n1.mail.test\n"
    assert services.stdout.split()[:1] == ["smtp"]
    assert "submission" in services.stdout


def test_promtool_checks_rules(promtool_bin: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.yml"
    good.write_text(
        "groups:\n"
        "- name: fleet\n"
        "  rules:\n"
        "  - alert: NodeHeartbeatMissing\n"
        "    expr: time() - fleet_node_last_heartbeat_seconds > 90\n"
        "    for: 1m\n"
        "    labels: {severity: high}\n"
    )
    bad = tmp_path / "bad.yml"
    bad.write_text(good.read_text().replace("> 90", "> > 90"))

    ok = run_promtool(promtool_bin, "check", "rules", str(good))
    refused = run_promtool(promtool_bin, "check", "rules", str(bad))

    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "SUCCESS: 1 rules found" in ok.stdout
    assert refused.returncode != 0
    assert "bad.yml" in refused.stdout + refused.stderr


class _Page(BaseHTTPRequestHandler):
    body = (
        b"<!doctype html><html><head><title>fleet</title></head><body>"
        b"<h1 id='out'>static</h1>"
        b"<script>document.getElementById('out').textContent = 'rendered by script ' + 6 * 7;"
        b"</script></body></html>"
    )

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def page_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_chromium_dumps_a_localhost_page_after_its_scripts_ran(
    chromium: Chromium, page_url: str
) -> None:
    dom = chromium.dump_dom(page_url)

    assert '<h1 id="out">rendered by script 42</h1>' in dom


def test_chromium_takes_a_screenshot(chromium: Chromium, page_url: str, tmp_path: Path) -> None:
    png = chromium.screenshot(page_url, tmp_path / "page.png", width=640, height=360)

    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (640, 360)


def _dkim_record(private_key: rsa.RSAPrivateKey) -> str:
    public = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    value = "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode()
    chunks = [value[i : i + 200] for i in range(0, len(value), 200)]
    return " ".join(f'"{chunk}"' for chunk in chunks)


def test_dkim_signature_verifies_against_the_key_bind_serves(bind_server: BindServer) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bind_server.set_zone(
        "mail.test",
        zone_text(
            "mail.test",
            [f"n1._domainkey TXT {_dkim_record(key)}", f"n2._domainkey TXT {_dkim_record(other)}"],
        ),
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    message = (
        b"From: probe@mail.test\r\nTo: sink@mail.test\r\nSubject: verify\r\n"
        b"Message-ID: <1@mail.test>\r\n\r\nhello from n1\r\n"
    )
    dnsfunc = dkim_dnsfunc(*bind_server.address)

    signed = dkim.sign(message, b"n1", b"mail.test", pem, include_headers=[b"from", b"subject"])
    wrong_selector = dkim.sign(message, b"n2", b"mail.test", pem, include_headers=[b"from"])
    missing = dkim.sign(message, b"n9", b"mail.test", pem, include_headers=[b"from"])

    assert dkim.verify(signed + message, dnsfunc=dnsfunc)
    assert not dkim.verify(signed + message.replace(b"hello", b"HELLO"), dnsfunc=dnsfunc)
    assert not dkim.verify(wrong_selector + message, dnsfunc=dnsfunc)
    assert not dkim.verify(missing + message, dnsfunc=dnsfunc)
