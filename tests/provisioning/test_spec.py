"""The ``provisioning:`` spec section: errors with file, line and field, and safe defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = (ROOT / "examples" / "quickstart.yaml").read_text()


def _spec(tmp_path: Path, section: str) -> Path:
    base = "\n".join(
        line for line in QUICKSTART.splitlines() if not line.startswith("provisioning")
    )
    if "\nprovisioning:" in QUICKSTART:
        base = QUICKSTART.split("\nprovisioning:")[0]
    path = tmp_path / "fleet.yaml"
    path.write_text(base + "\n" + section)
    return path


def test_a_valid_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _spec(
        tmp_path,
        "provisioning:\n  domain: mail.example.com\n  sink: probe@sink.example.com\n"
        "  dmarc: {policy: quarantine, rua: [dmarc@example.com]}\n",
    )
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize(
    ("section", "field", "words"),
    [
        ("  domain: Mail_Example\n  sink: p@sink.example.com\n", "provisioning.domain", "DNS name"),
        ("  domain: mail.example.com\n  sink: nobody\n", "provisioning.sink", "e-mail address"),
        (
            "  domain: mail.example.com\n  sink: p@s.example.com\n  dns: {zone: other.org}\n",
            "provisioning",
            "not inside the DNS zone",
        ),
        (
            "  domain: mail.example.com\n  sink: p@s.example.com\n"
            "  postfix: {default_process_limit: 0}\n",
            "provisioning.postfix.default_process_limit",
            "must be at least 1",
        ),
        (
            "  domain: mail.example.com\n  sink: p@s.example.com\n"
            "  spf: {extra: ['redirect=evil.example']}\n",
            "provisioning.spf.extra",
            "SPF term",
        ),
        (
            "  domain: mail.example.com\n  sink: p@s.example.com\n"
            "  sysctl: {net.core.somaxconn: '1; reboot'}\n",
            "provisioning.sysctl",
            "not a number",
        ),
        (
            "  domain: mail.example.com\n  sink: p@s.example.com\n  tsig_secret: abc\n",
            "provisioning.tsig_secret",
            "unknown field",
        ),
    ],
)
def test_mistakes_name_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, field: str, words: str
) -> None:
    path = _spec(tmp_path, "provisioning:\n" + section)
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:" in err
    assert field in err
    assert words in err
    assert "Traceback" not in err
