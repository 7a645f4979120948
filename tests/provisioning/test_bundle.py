"""The bootstrap bundle: pure rendering, versioned by content, safe against hostile values."""

from __future__ import annotations

import io
import subprocess
import tarfile

import pytest

from reconciler.node.bundle import BundleSettings, PostfixTuning, render_bundle

BASE = BundleSettings(
    node="demo-seattle-001", hostname="demo-seattle-001.mail.test", domain="mail.test"
)


def test_the_version_is_a_content_hash() -> None:
    one = render_bundle(BASE)
    assert one == render_bundle(BASE)
    assert len(one.version) == 64
    tuned = render_bundle(
        BundleSettings(**{**_fields(BASE), "postfix": PostfixTuning(default_process_limit=100)})
    )
    assert tuned.version != one.version
    assert "default_process_limit = 100" in tuned.file("/etc/postfix/main.cf").content


def test_the_tar_is_deterministic_and_holds_everything() -> None:
    bundle = render_bundle(BASE)
    assert bundle.tar() == bundle.tar()
    with tarfile.open(fileobj=io.BytesIO(bundle.tar())) as tar:
        names = set(tar.getnames())
        modes = {m.name: m.mode for m in tar.getmembers()}
    assert {"files/etc/postfix/main.cf", "install.sh", "run.sh", "check.sh", "VERSION"} <= names
    assert modes["install.sh"] == 0o755


def test_the_seed_tuning_choice_and_the_other_files() -> None:
    bundle = render_bundle(BASE)
    main_cf = bundle.file("/etc/postfix/main.cf").content
    # seed 003 sets both keys twice; we choose 200 and 5 (docs/provisioning.md)
    assert main_cf.count("default_process_limit =") == 1
    assert "default_process_limit = 200" in main_cf
    assert "default_destination_concurrency_limit = 5" in main_cf
    assert "milter_default_action = tempfail" in main_cf
    assert "myhostname = demo-seattle-001.mail.test" in main_cf
    sysctl = bundle.file("/etc/sysctl.d/90-fleet-reconciler.conf").content
    assert "net.core.somaxconn = 1024" in sysctl
    install = bundle.file("/install.sh").content
    for rule in ("ufw allow 22/tcp", "ufw allow 25/tcp", "ufw allow 587/tcp"):
        assert rule in install
    assert "cloud-init status --wait" in install
    assert "DPkg::Lock::Timeout" in install
    dkim = bundle.file("/etc/opendkim.conf").content
    assert "Selector demo-seattle-001" in dkim
    unit = bundle.file("/etc/systemd/system/fleet-reconciler-agent.service").content
    assert "EnvironmentFile=/etc/fleet-reconciler/agent.env" in unit


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("node", "x; rm -rf /"),
        ("hostname", "a.b$(reboot)"),
        ("domain", "mail.test\nrelayhost = evil"),
        ("agent_url", "http://x/`id`"),
        ("agent_package", "pkg; curl evil"),
        ("sysctl", {"net.core.somaxconn": "1; reboot"}),
        ("sysctl", {"kernel.x\n": "1"}),
    ],
)
def test_hostile_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError, match="is not"):
        render_bundle(BundleSettings(**{**_fields(BASE), field: value}))


def test_no_secret_in_the_bundle() -> None:
    bundle = render_bundle(BASE)
    text = "".join(f.content for f in (*bundle.files, *bundle.scripts))
    assert "RECONCILER_NODE_SECRET=" not in text
    assert "PRIVATE KEY" not in text


def test_shell_scripts_parse() -> None:
    bundle = render_bundle(BASE)
    for script in bundle.scripts:
        result = subprocess.run(["sh", "-n"], input=script.content, capture_output=True, text=True)
        assert result.returncode == 0, (script.path, result.stderr)


def _fields(settings: BundleSettings) -> dict[str, object]:
    return {name: getattr(settings, name) for name in settings.__slots__}  # type: ignore[attr-defined]
