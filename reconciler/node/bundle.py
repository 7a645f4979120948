"""The bootstrap bundle: every file a sending node needs, rendered by pure functions.

``render_bundle(settings)`` returns a :class:`Bundle`: files (path inside the node, content,
mode) plus ``install.sh`` and ``run.sh``, and a **version** that is the SHA-256 of all of them
(paths, modes, contents). The version names the bundle's folder on the node and is recorded
in the store, so

- a rerun of a version the node finished does nothing (``run.sh`` finds ``status`` = done);
- a changed bundle (new Postfix tuning, say) has a new version, which the life cycle rolls out
  node by node within the disruption budget.

What the bundle never contains: the node's heartbeat token (sent on stdin and written 0600 by
a separate command, outside the bundle and its hash) and the DKIM private key (generated ON the
node by ``install.sh``; only the public key is read back, from ``dkim.pub``).

Every path on the node is prefixed with ``$RECONCILER_NODE_ROOT`` (empty on a real node), so a
node stand-in runs the very same script inside its own folder, as an unprivileged user.

Postfix tuning (seed 003): the seed's example sets ``default_process_limit`` (200, then 50) and
``default_destination_concurrency_limit`` (20, then 5) twice; Postfix keeps the last value. We
choose **default_process_limit = 200** and **default_destination_concurrency_limit = 5**:

- the process limit caps parallel delivery agents across all destinations. The capacity rule
  is 1,000 emails/minute per core; a remote delivery takes 1-3 s, so a core needs 17-50
  concurrent ``smtp`` processes and a vertically scaled 4-core node up to 200. At about 4 MB
  per ``smtp`` process, 200 stay under 1 GB of a 2 GB node. 50 would cap a node below its
  rated capacity as soon as it has more than one core;
- the per-destination limit is politeness towards one mailbox provider: new dedicated IPs that
  open many parallel connections to Gmail or Outlook are deferred and lose reputation; 5, with
  ``initial_destination_concurrency = 2`` ramping up, is what Postfix actually ran with the
  seed's file, and what warmup needs. 20 would only help once an IP is fully warmed.

Both are spec settings (``provisioning.postfix``) with these defaults, so the choice is visible
and changeable, and a change rolls out as a new bundle version.
"""

from __future__ import annotations

import hashlib
import io
import re
import shlex
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "BUNDLES_DIR",
    "Bundle",
    "BundleFile",
    "BundleSettings",
    "PostfixTuning",
    "render_bundle",
]

#: where bundles are unpacked on a node, relative to the SSH user's home
BUNDLES_DIR = ".fleet-reconciler/bundles"
AGENT_ENV = "/etc/fleet-reconciler/agent.env"
AGENT_UNIT = "fleet-reconciler-agent"
DKIM_KEYS = "/etc/opendkim/keys"

_HOST = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$")
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_SYSCTL_KEY = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_-]+)+$")
_PACKAGE = re.compile(r"^[A-Za-z0-9._+\-=<>!~\[\],:/@]{1,200}$")
_URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/\-]*)?$")


@dataclass(frozen=True, slots=True)
class PostfixTuning:
    """Seed 003's ``main.cf`` performance settings (see the module's docstring)."""

    default_process_limit: int = 200
    initial_destination_concurrency: int = 2
    default_destination_concurrency_limit: int = 5
    minimal_backoff_time: int = 300  # seconds
    maximal_backoff_time: int = 3600
    #: networks allowed to relay through the node (the platform's senders); loopback always
    submission_networks: tuple[str, ...] = ()


#: seed 003's kernel settings
DEFAULT_SYSCTL: Mapping[str, str] = {
    "net.core.somaxconn": "1024",
    "net.core.netdev_max_backlog": "3000",
    "net.ipv4.tcp_max_syn_backlog": "1024",
    "net.core.rmem_max": "16777216",
    "net.core.wmem_max": "16777216",
}


@dataclass(frozen=True, slots=True)
class BundleSettings:
    node: str  # the node's name, also its DKIM selector
    hostname: str  # <node>.<domain>
    domain: str  # the fleet's sending domain (DKIM d=)
    agent_url: str | None = None  # the daemon's heartbeat URL; None: agent installed, not started
    agent_package: str = "fleet-reconciler"
    heartbeat_interval: int = 30
    postfix: PostfixTuning = field(default_factory=PostfixTuning)
    sysctl: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_SYSCTL))
    ssh_port: int = 22
    dkim_bits: int = 2048
    install_timeout: int = 1500  # seconds: run.sh kills install.sh after this


@dataclass(frozen=True, slots=True)
class BundleFile:
    path: str  # absolute path on the node ("/etc/postfix/main.cf")
    content: str
    mode: int = 0o644


@dataclass(frozen=True, slots=True)
class Bundle:
    version: str  # sha256 hex of everything in it
    files: tuple[BundleFile, ...]  # installed on the node
    scripts: tuple[BundleFile, ...]  # install.sh, run.sh, check.sh (in the bundle folder)

    @property
    def short(self) -> str:
        return self.version[:12]

    def file(self, path: str) -> BundleFile:
        for item in (*self.files, *self.scripts):
            if item.path == path:
                return item
        raise KeyError(path)

    def tar(self) -> bytes:
        """A deterministic tar of the bundle folder (``files/...`` and the scripts)."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for item in self.files:
                _add(tar, "files" + item.path, item.content, item.mode)
            for item in self.scripts:
                _add(tar, item.path.lstrip("/"), item.content, item.mode)
            _add(tar, "VERSION", self.version + "\n", 0o644)
        return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, content: str, mode: int) -> None:
    data = content.encode("utf-8")
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


# --- validation (values end up in config files and a shell script) ------------------------


def _check(settings: BundleSettings) -> None:
    if not _LABEL.fullmatch(settings.node):
        raise ValueError(f"node name {settings.node!r} is not a DNS label")
    for name, value in (("hostname", settings.hostname), ("domain", settings.domain)):
        if not _HOST.fullmatch(value):
            raise ValueError(f"{name} {value!r} is not a lower-case DNS name")
    if settings.agent_url is not None and not _URL.fullmatch(settings.agent_url):
        raise ValueError(f"agent URL {settings.agent_url!r} is not a plain http(s) URL")
    if not _PACKAGE.fullmatch(settings.agent_package):
        raise ValueError(f"agent package {settings.agent_package!r} is not a pip requirement")
    for key, value in settings.sysctl.items():
        if not _SYSCTL_KEY.fullmatch(key) or not re.fullmatch(r"[0-9][0-9 ]{0,63}", value):
            raise ValueError(f"sysctl {key} = {value!r} is not a kernel setting")
    for net in settings.postfix.submission_networks:
        if not re.fullmatch(r"[0-9a-fA-F.:]+/[0-9]{1,3}", net):
            raise ValueError(f"submission network {net!r} is not a CIDR block")


# --- the files ----------------------------------------------------------------------------


def postfix_main_cf(s: BundleSettings) -> str:
    p = s.postfix
    networks = " ".join(["127.0.0.0/8", *p.submission_networks])
    return f"""\
# Managed by fleet-reconciler (bundle rendered for {s.node}); local edits are overwritten.
compatibility_level = 3.6
myhostname = {s.hostname}
mydomain = {s.domain}
myorigin = $myhostname
mydestination = $myhostname, localhost.$mydomain, localhost
inet_interfaces = all
inet_protocols = ipv4
mynetworks = {networks}
smtpd_banner = $myhostname ESMTP
biff = no
append_dot_mydomain = no
alias_maps = hash:/etc/aliases
alias_database = hash:/etc/aliases
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_tls_cert_file = /etc/ssl/certs/ssl-cert-snakeoil.pem
smtpd_tls_key_file = /etc/ssl/private/ssl-cert-snakeoil.key
smtpd_tls_security_level = may
smtp_tls_security_level = may
smtp_tls_loglevel = 1
# DKIM: every message is signed by OpenDKIM; if the milter is down, mail waits (never unsigned)
milter_protocol = 6
milter_default_action = tempfail
smtpd_milters = inet:127.0.0.1:8891
non_smtpd_milters = $smtpd_milters
# Seed 003 tuning (chosen values and why: docs/provisioning.md, "Postfix tuning")
default_process_limit = {p.default_process_limit}
initial_destination_concurrency = {p.initial_destination_concurrency}
default_destination_concurrency_limit = {p.default_destination_concurrency_limit}
minimal_backoff_time = {p.minimal_backoff_time}s
maximal_backoff_time = {p.maximal_backoff_time}s
"""


def postfix_master_cf(s: BundleSettings) -> str:
    return """\
# Managed by fleet-reconciler. Postfix master process configuration (Ubuntu 22.04 defaults,
# plus the submission service on 587 for the platform's senders in mynetworks).
# service type  private unpriv  chroot  wakeup  maxproc command + args
smtp      inet  n       -       y       -       -       smtpd
submission inet n       -       y       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_relay_restrictions=permit_mynetworks,reject
pickup    unix  n       -       y       60      1       pickup
cleanup   unix  n       -       y       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       y       1000?   1       tlsmgr
rewrite   unix  -       -       y       -       -       trivial-rewrite
bounce    unix  -       -       y       -       0       bounce
defer     unix  -       -       y       -       0       bounce
trace     unix  -       -       y       -       0       bounce
verify    unix  -       -       y       -       1       verify
flush     unix  n       -       y       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       y       -       -       smtp
relay     unix  -       -       y       -       -       smtp
  -o syslog_name=postfix/$service_name
showq     unix  n       -       y       -       -       showq
error     unix  -       -       y       -       -       error
retry     unix  -       -       y       -       -       error
discard   unix  -       -       y       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       y       -       -       lmtp
anvil     unix  -       -       y       -       1       anvil
scache    unix  -       -       y       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def sysctl_conf(s: BundleSettings) -> str:
    lines = ["# Managed by fleet-reconciler: seed 003 kernel settings for a mail server"]
    lines += [f"{key} = {value}" for key, value in sorted(s.sysctl.items())]
    return "\n".join(lines) + "\n"


def fail2ban_jail(s: BundleSettings) -> str:
    return f"""\
# Managed by fleet-reconciler
[DEFAULT]
bantime = 1h
findtime = 10m
maxretry = 5
backend = systemd

[sshd]
enabled = true
port = {s.ssh_port}

[postfix]
enabled = true
mode = aggressive
port = smtp,submission
"""


def opendkim_conf(s: BundleSettings) -> str:
    return f"""\
# Managed by fleet-reconciler. The key is generated on this node and never leaves it.
Syslog yes
UMask 007
Mode s
Canonicalization relaxed/relaxed
SignatureAlgorithm rsa-sha256
Domain {s.domain}
SubDomains yes
Selector {s.node}
KeyFile {DKIM_KEYS}/{s.node}.private
OversignHeaders From
Socket inet:8891@127.0.0.1
UserID opendkim
PidFile /run/opendkim/opendkim.pid
"""


def agent_unit(s: BundleSettings) -> str:
    url = s.agent_url or "http://127.0.0.1:8080"
    return f"""\
# Managed by fleet-reconciler: the node agent posts a signed heartbeat every interval.
[Unit]
Description=fleet-reconciler node agent (heartbeats to the daemon)
After=network-online.target postfix.service
Wants=network-online.target

[Service]
EnvironmentFile={AGENT_ENV}
ExecStart=/opt/fleet-reconciler/bin/reconcile agent --node {s.node} --url {url} \\
  --interval {s.heartbeat_interval}s
Restart=always
RestartSec=5
DynamicUser=yes
SupplementaryGroups=adm
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
"""


def ufw_rules(s: BundleSettings) -> list[str]:
    return [f"{s.ssh_port}/tcp", "25/tcp", "587/tcp"]


def install_sh(s: BundleSettings, files: tuple[BundleFile, ...]) -> str:
    q = shlex.quote
    installs = "\n".join(f"put {q(f.path)} {f.mode:o}" for f in sorted(files, key=lambda f: f.path))
    rules = "\n".join(f"ufw allow {q(rule)}" for rule in ufw_rules(s))
    start_agent = (
        f"systemctl enable --now {AGENT_UNIT}"
        if s.agent_url
        else f"systemctl enable {AGENT_UNIT}  # no daemon URL: enabled, started by the operator"
    )
    return f"""\
#!/bin/sh
# fleet-reconciler bootstrap of {s.node} ({s.hostname}). Idempotent: safe to run again.
# Every path is under $RECONCILER_NODE_ROOT (empty on a real node; a stand-in's own folder).
set -eu
R="${{RECONCILER_NODE_ROOT:-}}"
B="$(cd "$(dirname "$0")" && pwd)"
export DEBIAN_FRONTEND=noninteractive
step() {{ echo "== $*"; }}

step "wait for first-boot package activity (cloud-init, unattended upgrades)"
if command -v cloud-init >/dev/null 2>&1; then cloud-init status --wait >/dev/null || true; fi
APT="apt-get -q -y -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confold"

step "packages"
$APT update
$APT install --no-install-recommends postfix opendkim opendkim-tools ufw fail2ban \\
  ssl-cert openssl python3-venv

step "configuration files"
put() {{
  mkdir -p "$(dirname "$R$1")"
  cp "$B/files$1" "$R$1.fleet-new"
  chmod "$2" "$R$1.fleet-new"
  mv "$R$1.fleet-new" "$R$1"
}}
{installs}

step "kernel settings"
sysctl -p "$R/etc/sysctl.d/90-fleet-reconciler.conf" >/dev/null

step "DKIM key (generated here; the private key never leaves this node)"
mkdir -p "$R{DKIM_KEYS}"
if [ ! -s "$R{DKIM_KEYS}/{s.node}.private" ]; then
  opendkim-genkey -b {s.dkim_bits} -D "$R{DKIM_KEYS}" -d {q(s.domain)} -s {q(s.node)}
fi
chown -R opendkim:opendkim "$R{DKIM_KEYS}"
chmod 600 "$R{DKIM_KEYS}/{s.node}.private"
openssl rsa -in "$R{DKIM_KEYS}/{s.node}.private" -pubout -outform DER 2>/dev/null \\
  | base64 | tr -d '\\n' > "$B/dkim.pub"

step "firewall"
ufw default deny incoming >/dev/null
ufw default allow outgoing >/dev/null
{rules}
ufw --force enable >/dev/null

step "services"
printf '%s\\n' {q(s.hostname)} > "$R/etc/mailname"
hostnamectl set-hostname {q(s.hostname)}
newaliases
systemctl enable --now opendkim fail2ban postfix
systemctl reload-or-restart opendkim postfix fail2ban

step "agent"
if [ ! -x "$R/opt/fleet-reconciler/bin/reconcile" ]; then
  python3 -m venv "$R/opt/fleet-reconciler"
  "$R/opt/fleet-reconciler/bin/pip" install -q {q(s.agent_package)}
fi
systemctl daemon-reload
{start_agent}

step "record"
mkdir -p "$R/etc/fleet-reconciler"
cp "$B/VERSION" "$R/etc/fleet-reconciler/bundle-version"
step "done"
"""


def run_sh(s: BundleSettings) -> str:
    """Runs install.sh detached from the SSH session, once per version."""
    return f"""\
#!/bin/sh
# Started as: setsid nohup sh run.sh locked </dev/null >run.log 2>&1 &
# ("locked": the starter took the lock and wrote status; without it, run.sh takes them).
# A dropped SSH connection does not stop it; a second start while it runs, or after it
# finished, does nothing. status: running | done | failed <exit status>
B="$(cd "$(dirname "$0")" && pwd)"
cd "$B" || exit 1
if [ "${{1:-}}" != locked ]; then
  if [ "$(cat status 2>/dev/null)" = done ]; then exit 0; fi
  mkdir lock 2>/dev/null || exit 0
  echo running > status.tmp && mv status.tmp status
fi
date -u +%s.%N > started_at
timeout -k 10 {s.install_timeout} sh ./install.sh > install.log 2>&1
rc=$?
date -u +%s.%N > finished_at
if [ $rc -eq 0 ]; then echo done > status.tmp; else echo "failed $rc" > status.tmp; fi
mv status.tmp status
rmdir lock
exit $rc
"""


def check_sh(s: BundleSettings, files: tuple[BundleFile, ...]) -> str:
    """Drift check: the files as installed and the services running. Prints problems."""
    sums = "\n".join(
        f"{hashlib.sha256(f.content.encode()).hexdigest()}  {f.path}"
        for f in sorted(files, key=lambda f: f.path)
    )
    units = " ".join(["postfix", "opendkim", "fail2ban", *([AGENT_UNIT] if s.agent_url else [])])
    return f"""\
#!/bin/sh
# fleet-reconciler drift check for {s.node}: exit 0 and no output when the node is as bundled
R="${{RECONCILER_NODE_ROOT:-}}"
bad=0
while read -r sum path; do
  got=$(sha256sum "$R$path" 2>/dev/null | cut -d' ' -f1)
  if [ "$got" != "$sum" ]; then echo "changed: $path"; bad=1; fi
done <<'SUMS'
{sums}
SUMS
for unit in {units}; do
  systemctl is-active --quiet "$unit" || {{ echo "not running: $unit"; bad=1; }}
done
[ -s "$R{DKIM_KEYS}/{s.node}.private" ] || {{ echo "missing: DKIM key"; bad=1; }}
exit $bad
"""


def render_bundle(settings: BundleSettings) -> Bundle:
    """Every file of the node's bundle and its content-hash version (pure, deterministic)."""
    _check(settings)
    files = (
        BundleFile("/etc/postfix/main.cf", postfix_main_cf(settings)),
        BundleFile("/etc/postfix/master.cf", postfix_master_cf(settings)),
        BundleFile("/etc/sysctl.d/90-fleet-reconciler.conf", sysctl_conf(settings)),
        BundleFile("/etc/fail2ban/jail.d/fleet-reconciler.local", fail2ban_jail(settings)),
        BundleFile("/etc/opendkim.conf", opendkim_conf(settings)),
        BundleFile(f"/etc/systemd/system/{AGENT_UNIT}.service", agent_unit(settings)),
    )
    scripts = (
        BundleFile("/install.sh", install_sh(settings, files), 0o755),
        BundleFile("/run.sh", run_sh(settings), 0o755),
        BundleFile("/check.sh", check_sh(settings, files), 0o755),
    )
    digest = hashlib.sha256()
    for item in (*files, *scripts):
        for part in (item.path, f"{item.mode:o}", item.content):
            data = part.encode("utf-8")
            digest.update(len(data).to_bytes(8, "big"))
            digest.update(data)
    return Bundle(digest.hexdigest(), files, scripts)
