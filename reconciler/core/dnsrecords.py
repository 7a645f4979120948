"""The DNS records a sending fleet publishes, computed purely (no I/O).

- ``A``      ``<node>.<domain>`` -> the node's main IP (one per node);
- ``TXT``    ``<node>._domainkey.<domain>``: the node's DKIM public key (its selector is the
  node's name, so a key rotation or a decommission touches one node only);
- ``TXT``    ``<domain>``: SPF listing every sending IP of the fleet, kept within the DNS
  limits (RFC 7208: at most 10 DNS-querying terms per evaluation; each character-string at
  most 255 bytes; a record kept under 450 bytes so an answer fits a 512-byte UDP message).
  When the IPs do not fit one record they are split into ``_spf<N>.<domain>`` records that the
  main record ``include:``s; each include costs one of the 10 look-ups. Adjacent addresses are
  collapsed into CIDR blocks (``ip4:198.51.100.0/30``) first.
- ``TXT``    ``_dmarc.<domain>``: the spec's DMARC policy.

Forward-confirmed reverse DNS (FCrDNS): the PTR of the IP names the host and the host's A
record lists the IP (``fcrdns_problem``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_RECORD_BYTES",
    "MAX_SPF_LOOKUPS",
    "RecordSet",
    "SpfOverflowError",
    "dkim_name",
    "dkim_txt",
    "dmarc_name",
    "dmarc_txt",
    "fcrdns_problem",
    "spf_lookups",
    "spf_part_names",
    "spf_records",
    "split_txt",
    "txt_value",
]

#: RFC 7208 §4.6.4: at most 10 mechanisms/modifiers that cause DNS queries
MAX_SPF_LOOKUPS = 10
#: keep each TXT record under this many bytes so an answer fits a classic 512-byte UDP
#: message (RFC 7208 §3.4 asks SPF publishers to keep records small)
MAX_RECORD_BYTES = 450
#: one DNS character-string (RFC 1035 §3.3)
MAX_STRING_BYTES = 255


@dataclass(frozen=True, slots=True)
class RecordSet:
    """One published RRset. ``name`` is fully qualified without the trailing dot; TXT values
    are the record's text (split into 255-byte strings by the adapter, see ``split_txt``)."""

    name: str
    rtype: str  # "A", "TXT", "PTR"
    values: tuple[str, ...]
    ttl: int = 300


class SpfOverflowError(ValueError):
    """The fleet's sending IPs cannot be listed within the SPF limits."""


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


def split_txt(text: str) -> tuple[str, ...]:
    """A TXT value as 255-byte character-strings (ASCII only: SPF, DKIM and DMARC are)."""
    data = text.encode("ascii")
    if not data:
        return ("",)
    return tuple(
        data[i : i + MAX_STRING_BYTES].decode("ascii")
        for i in range(0, len(data), MAX_STRING_BYTES)
    )


def txt_value(strings: Iterable[str]) -> str:
    """The record's text from its character-strings (the inverse of ``split_txt``)."""
    return "".join(strings)


# --- DKIM ---------------------------------------------------------------------------------


def dkim_name(selector: str, domain: str) -> str:
    return f"{_norm(selector)}._domainkey.{_norm(domain)}"


def dkim_txt(public_key_b64: str) -> str:
    """The DKIM key record (RFC 6376 §3.6.1) for an RSA public key in base64 (DER
    SubjectPublicKeyInfo, as ``opendkim-genkey`` and ``openssl rsa -pubout`` print it)."""
    key = "".join(public_key_b64.split())
    if not key or any(c not in _B64 for c in key):
        raise ValueError("a DKIM public key is base64 (A-Z, a-z, 0-9, +, /, =)")
    return f"v=DKIM1; k=rsa; p={key}"


_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


# --- DMARC --------------------------------------------------------------------------------


def dmarc_name(domain: str) -> str:
    return f"_dmarc.{_norm(domain)}"


def dmarc_txt(
    policy: str,
    *,
    subdomain_policy: str | None = None,
    percent: int = 100,
    rua: Sequence[str] = (),
    ruf: Sequence[str] = (),
    adkim: str = "r",
    aspf: str = "r",
) -> str:
    """A DMARC record (RFC 7489 §6.3) with its tags in the RFC's order."""
    if policy not in ("none", "quarantine", "reject"):
        raise ValueError(f"DMARC policy is none, quarantine or reject, not {policy!r}")
    parts = ["v=DMARC1", f"p={policy}"]
    if subdomain_policy is not None:
        parts.append(f"sp={subdomain_policy}")
    if adkim != "r":
        parts.append(f"adkim={adkim}")
    if aspf != "r":
        parts.append(f"aspf={aspf}")
    if percent != 100:
        parts.append(f"pct={percent}")
    if rua:
        parts.append("rua=" + ",".join(f"mailto:{a}" for a in rua))
    if ruf:
        parts.append("ruf=" + ",".join(f"mailto:{a}" for a in ruf))
    return "; ".join(parts)


# --- SPF ----------------------------------------------------------------------------------

_LOOKUP_PREFIXES = ("include:", "exists:", "redirect=", "a:", "a/", "mx:", "mx/", "ptr:")


def spf_lookups(terms: Iterable[str]) -> int:
    """How many of ``terms`` cost a DNS look-up (RFC 7208 §4.6.4)."""
    count = 0
    for term in terms:
        bare = term.lstrip("+-~?").lower()
        if bare in ("a", "mx", "ptr") or bare.startswith(_LOOKUP_PREFIXES):
            count += 1
    return count


def _blocks(ips: Iterable[str]) -> list[str]:
    nets = []
    for ip in ips:
        addr = ipaddress.ip_address(ip.strip())
        nets.append(ipaddress.ip_network(addr))
    v4 = sorted(n for n in nets if n.version == 4)
    v6 = sorted(n for n in nets if n.version == 6)
    out: list[str] = []
    for net in ipaddress.collapse_addresses(v4):
        out.append(f"ip4:{net.network_address}" if net.prefixlen == 32 else f"ip4:{net}")
    for net6 in ipaddress.collapse_addresses(v6):
        out.append(f"ip6:{net6.network_address}" if net6.prefixlen == 128 else f"ip6:{net6}")
    return out


def spf_records(
    domain: str,
    ips: Iterable[str],
    *,
    extra: Sequence[str] = (),
    all_qualifier: str = "-",
    ttl: int = 300,
    max_bytes: int = MAX_RECORD_BYTES,
    max_lookups: int = MAX_SPF_LOOKUPS,
) -> list[RecordSet]:
    """The SPF records that list every one of ``ips`` (deterministic: sorted, collapsed).

    ``extra`` are the operator's own terms (e.g. ``include:_spf.google.com``), kept first and
    counted against the look-up limit. Returns the main record first, then ``_spf<N>`` parts
    (only when the IPs do not fit the main record). Raises ``SpfOverflowError`` when even
    ``max_lookups`` parts cannot hold them: publish fewer IPs per domain (a sending domain per
    region) or give the fleet contiguous address blocks.
    """
    domain = _norm(domain)
    if all_qualifier not in ("-", "~", "?"):
        raise ValueError("the SPF all qualifier is -, ~ or ?")
    blocks = _blocks(ips)
    tail = f"{all_qualifier}all"
    used = spf_lookups(extra)
    if used > max_lookups:
        raise SpfOverflowError(
            f"the extra SPF terms already use {used} DNS look-ups (limit {max_lookups})"
        )
    head = ["v=spf1", *extra]
    single = " ".join([*head, *blocks, tail])
    if len(single.encode("ascii")) <= max_bytes:
        return [RecordSet(domain, "TXT", (single,), ttl)]
    # split the blocks into include parts, each under max_bytes
    parts: list[list[str]] = []
    current: list[str] = []
    for block in blocks:
        candidate = " ".join(["v=spf1", *current, block, tail])
        if current and len(candidate.encode("ascii")) > max_bytes:
            parts.append(current)
            current = []
        current.append(block)
    if current:
        parts.append(current)
    names = [f"_spf{i + 1}.{domain}" for i in range(len(parts))]
    main = " ".join([*head, *(f"include:{n}" for n in names), tail])
    if used + len(parts) > max_lookups or len(main.encode("ascii")) > max_bytes:
        raise SpfOverflowError(
            f"{len(blocks)} address blocks need {len(parts)} SPF include records, "
            f"{used + len(parts)} DNS look-ups in all (limit {max_lookups})"
        )
    records = [RecordSet(domain, "TXT", (main,), ttl)]
    for name, part in zip(names, parts, strict=True):
        records.append(RecordSet(name, "TXT", (" ".join(["v=spf1", *part, tail]),), ttl))
    return records


def spf_part_names(domain: str, max_lookups: int = MAX_SPF_LOOKUPS) -> list[str]:
    """Every name an SPF part of ``domain`` may use (to remove parts no longer needed)."""
    return [f"_spf{i + 1}.{_norm(domain)}" for i in range(max_lookups)]


# --- FCrDNS -------------------------------------------------------------------------------


def fcrdns_problem(
    ip: str, hostname: str, ptr_names: Sequence[str], forward_ips: Sequence[str]
) -> str | None:
    """None when reverse and forward DNS agree (the PTR of ``ip`` is ``hostname`` and
    ``hostname`` resolves to ``ip``), else what is wrong, for the plan and the alert."""
    host = _norm(hostname)
    ptrs = {_norm(p) for p in ptr_names}
    if not ptrs:
        return f"no PTR record for {ip} yet (expected {host})"
    if host not in ptrs:
        return f"PTR of {ip} is {', '.join(sorted(ptrs))}, expected {host}"
    try:
        want = ipaddress.ip_address(ip)
        got = {ipaddress.ip_address(a) for a in forward_ips}
    except ValueError:
        return f"{host} resolves to something that is not an IP address"
    if not got:
        return f"{host} has no address record yet (expected {ip})"
    if want not in got:
        return f"{host} resolves to {', '.join(sorted(map(str, got)))}, not {ip}"
    return None
