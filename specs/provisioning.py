"""The ``provisioning:`` section of the spec: how a bare VPS becomes a verified sending node.

Only *what* the fleet is lives here (its sending domain, the DNS zone, SPF and DMARC policy,
the Postfix tuning, deadlines). Secrets are never in the spec: the TSIG key file and the SSH
private key file are named by the operator in the environment (see docs/provisioning.md).

Without a ``provisioning:`` section a node's pipeline stops after reverse DNS (as before);
with one, every node goes through DNS, SSH bootstrap and verification before it sends.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from specs.durations import Duration, within

__all__ = ["ProvisioningSpec"]

_HOST = re.compile(r"^(?=.{1,200}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$")
_EMAIL = re.compile(r"^[A-Za-z0-9._+-]{1,64}@([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_SPF_TERM = re.compile(
    r"^[+~?-]?(include:[a-z0-9._-]+|ip4:[0-9./]+|ip6:[0-9a-fA-F:./]+|a(:[a-z0-9._-]+)?|mx(:[a-z0-9._-]+)?)$"
)
_SYSCTL_KEY = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_-]+)+$")


def _domain(value: str) -> str:
    value = value.strip().rstrip(".").lower()
    if not _HOST.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a DNS name "
            "(lower-case labels separated by dots, e.g. mail.example.com)"
        )
    return value


def _email(value: str) -> str:
    if not _EMAIL.fullmatch(value.strip()):
        raise ValueError(f"{value!r} is not an e-mail address like ops@example.com")
    return value.strip()


DomainName = Annotated[str, AfterValidator(_domain)]
Email = Annotated[str, AfterValidator(_email)]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        str_strip_whitespace=True,
        defer_build=True,
    )


class DnsSettings(_Model):
    """Where the fleet's records are published (RFC 2136 dynamic update with TSIG)."""

    zone: DomainName | None = None
    """The DNS zone updated (default: the sending domain itself)."""
    server: str | None = None
    """The zone's primary server, host or host:port (the operator may override it with
    RECONCILER_DNS_SERVER; the simulator uses its DNS stand-in)."""
    ttl: Duration = timedelta(minutes=5)
    """TTL of the records published."""

    @field_validator("server")
    @classmethod
    def _server(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
        if port and (not port.isdigit() or not 0 < int(port) < 65536):
            raise ValueError(f"{value!r}: the port must be 1-65535")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            _domain(host)
        return value

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=30) <= value <= timedelta(days=1):
            raise ValueError("the TTL must be between 30s and 1d")
        return value


class SpfSettings(_Model):
    """The domain's SPF record, listing every sending IP of the fleet."""

    manage: bool = True
    """Publish and update the SPF record as the fleet grows and shrinks."""
    extra: list[str] = Field(default_factory=list, max_length=9)
    """Other senders' terms kept in the record, e.g. include:_spf.google.com."""
    all: Literal["-", "~", "?"] = "-"
    """Qualifier of the final all: - (fail), ~ (softfail), ? (neutral)."""

    @field_validator("extra")
    @classmethod
    def _terms(cls, values: list[str]) -> list[str]:
        for term in values:
            if not _SPF_TERM.fullmatch(term):
                raise ValueError(
                    f"{term!r} is not an SPF term we can keep (include:, ip4:, ip6:, a, mx)"
                )
        return values


class DmarcSettings(_Model):
    """The domain's DMARC record (_dmarc.<domain>)."""

    manage: bool = True
    """Publish the DMARC record from these settings."""
    policy: Literal["none", "quarantine", "reject"] = "none"
    """What receivers do with mail that fails DMARC."""
    subdomain_policy: Literal["none", "quarantine", "reject"] | None = None
    """Policy for subdomains (default: the policy)."""
    percent: Annotated[int, Field(ge=0, le=100)] = 100
    """Share of failing mail the policy applies to."""
    rua: list[Email] = Field(default_factory=list, max_length=5)
    """Where aggregate reports go."""
    ruf: list[Email] = Field(default_factory=list, max_length=5)
    """Where failure reports go."""
    adkim: Literal["r", "s"] = "r"
    """DKIM alignment: relaxed or strict."""
    aspf: Literal["r", "s"] = "r"
    """SPF alignment: relaxed or strict."""


class SshSettings(_Model):
    """How the bootstrap reaches a node (the private key file is the operator's)."""

    user: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] = "root"
    """Login user on a fresh node."""
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    """SSH port."""


class PostfixSettings(_Model):
    """Postfix tuning (seed 003). Chosen defaults and why: docs/provisioning.md."""

    default_process_limit: Annotated[int, Field(ge=1, le=1000)] = 200
    """Parallel Postfix processes (delivery agents across all destinations)."""
    initial_destination_concurrency: Annotated[int, Field(ge=1, le=100)] = 2
    """Parallel deliveries to one destination at the start."""
    default_destination_concurrency_limit: Annotated[int, Field(ge=1, le=100)] = 5
    """Most parallel deliveries to one destination (politeness towards mailbox providers)."""
    minimal_backoff_time: Annotated[Duration, within(timedelta(seconds=1), timedelta(days=1))] = (
        timedelta(seconds=300)
    )
    """Shortest wait before retrying a deferred message."""
    maximal_backoff_time: Duration = timedelta(seconds=3600)
    """Longest wait before retrying a deferred message."""
    submission_networks: list[str] = Field(default_factory=list, max_length=50)
    """Networks (CIDR) of the platform's senders, allowed to relay through the node."""

    @field_validator("submission_networks")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        out = []
        for value in values:
            try:
                out.append(str(ipaddress.ip_network(value, strict=False)))
            except ValueError as exc:
                raise ValueError(f"{value!r} is not a network like 203.0.113.0/24") from exc
        return out

    @model_validator(mode="after")
    def _order(self) -> PostfixSettings:
        if self.initial_destination_concurrency > self.default_destination_concurrency_limit:
            raise ValueError(
                "initial_destination_concurrency is above default_destination_concurrency_limit"
            )
        if self.minimal_backoff_time > self.maximal_backoff_time:
            raise ValueError("minimal_backoff_time is above maximal_backoff_time")
        if not timedelta(seconds=1) <= self.maximal_backoff_time <= timedelta(days=1):
            raise ValueError("maximal_backoff_time must be between 1s and 1d")
        return self


_DEFAULT_SYSCTL = {
    "net.core.somaxconn": "1024",
    "net.core.netdev_max_backlog": "3000",
    "net.ipv4.tcp_max_syn_backlog": "1024",
    "net.core.rmem_max": "16777216",
    "net.core.wmem_max": "16777216",
}


class CircuitBreaker(_Model):
    """Stop creating in a region whose new nodes keep failing (a broken image, port 25
    blocked...): creation pauses with a high alert."""

    failures: Annotated[int, Field(ge=1, le=1000)] = 3
    """Failed provisionings in one region within the window that open the breaker."""
    window: Annotated[Duration, within(timedelta(minutes=1), timedelta(days=7))] = timedelta(
        hours=1
    )
    """The window."""


class ProvisioningSpec(_Model):
    """From a bare VPS to a verified sending node."""

    domain: DomainName
    """The fleet's sending domain: nodes are <node>.<domain> (A, PTR, DKIM selector)."""
    dns: DnsSettings = Field(default_factory=DnsSettings)
    """Where the records are published."""
    spf: SpfSettings = Field(default_factory=SpfSettings)
    """The SPF record of the domain."""
    dmarc: DmarcSettings = Field(default_factory=DmarcSettings)
    """The DMARC record of the domain."""
    ssh: SshSettings = Field(default_factory=SshSettings)
    """How the bootstrap logs in."""
    sink: Email
    """The internal mailbox each new node sends its test mail to."""
    postfix: PostfixSettings = Field(default_factory=PostfixSettings)
    """Postfix tuning."""
    sysctl: dict[str, str] = Field(default_factory=lambda: dict(_DEFAULT_SYSCTL), max_length=50)
    """Kernel settings (seed 003 defaults)."""
    agent_package: Annotated[str, Field(pattern=r"^[A-Za-z0-9._+\-=<>!~\[\],:/@]{1,200}$")] = (
        "fleet-reconciler"
    )
    """What pip installs on the node for the agent."""
    deadline: Duration = timedelta(minutes=30)
    """A node not verified this long after its create is destroyed and replaced."""
    step_timeout: Annotated[Duration, within(timedelta(seconds=1), timedelta(days=1))] = timedelta(
        minutes=10
    )
    """Longest one step may take (bootstrap included)."""
    step_attempts: Annotated[int, Field(ge=1, le=20)] = 3
    """Attempts of one step before the node is failed."""
    replacements: Annotated[int, Field(ge=0, le=10)] = 2
    """Replacements of a failed node per slot before the slot waits for an operator."""
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker)
    """Per-region circuit breaker."""
    drift_check: Annotated[Duration, within(timedelta(minutes=1), timedelta(days=7))] = timedelta(
        hours=1
    )
    """How often a node in service is checked against what provisioning left (its host key,
    its DNS records and FCrDNS, its bootstrap files and services): drift is repaired or the
    node is quarantined."""

    @field_validator("sysctl")
    @classmethod
    def _sysctl(cls, values: dict[str, str]) -> dict[str, str]:
        for key, value in values.items():
            if not _SYSCTL_KEY.fullmatch(key):
                raise ValueError(f"{key!r} is not a kernel setting name like net.core.somaxconn")
            if not re.fullmatch(r"[0-9][0-9 ]{0,63}", str(value)):
                raise ValueError(f"{key}: {value!r} is not a number (or numbers)")
        return values

    @model_validator(mode="after")
    def _zone(self) -> ProvisioningSpec:
        zone = self.dns.zone
        if zone is not None and not (self.domain == zone or self.domain.endswith("." + zone)):
            raise ValueError(f"the domain {self.domain} is not inside the DNS zone {zone}")
        if self.deadline < timedelta(minutes=1) or self.deadline > timedelta(days=1):
            raise ValueError("deadline must be between 1m and 1d")
        if self.step_timeout > self.deadline:
            raise ValueError("step_timeout is longer than the deadline")
        return self

    @property
    def zone(self) -> str:
        return self.dns.zone or self.domain

    def hostname(self, node: str) -> str:
        return f"{node}.{self.domain}"
