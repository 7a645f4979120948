"""DNS blocklists (DNSBL) as the spec names them: answer-code patterns, known zones, dead zones.

**Code patterns** use Postfix postscreen's reply-filter syntax
(``postscreen_dnsbl_sites = zen.spamhaus.org=127.0.0.[2..11]*3``): four dot-separated octets,
each a number or a bracketed list of ``;``-separated numbers and ``low..high`` ranges, e.g.
``127.0.0.2``, ``127.0.0.[2..3;9]``, ``127.255.255.[252..255]``.

**Known zones** carry each list's documented answer codes (what each code means, which codes
are errors, the free daily query allowance), so that ``blocklists: [zen.spamhaus.org]`` reads
Spamhaus right without the spec author copying its code table. A spec may override any of it.

**Shut-down zones** are refused by validation: a dead list may answer "listed" for every
address (RFC 5782 test entries catch that at run time too).

Pure data and parsing: no DNS here (``providers.dnsbl`` queries, ``reconciler.core.reputation``
reads the answers).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

#: longest pattern text accepted (patterns come from untrusted specs)
MAX_PATTERN_LENGTH = 120

_OCTET_RANGE = re.compile(r"^(\d{1,3})\.\.(\d{1,3})$")
_NUMBER = re.compile(r"^\d{1,3}$")


class Severity(StrEnum):
    """Seed 002's alert severities."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        return {"low": 1, "medium": 2, "high": 3}[self.value]


class ListingAction(StrEnum):
    """What a condition does: ``pause`` takes the node out of the sending rotation (and
    alerts), ``alert`` alerts, ``report`` records it (events, status, metrics) without an
    alert, ``ignore`` does nothing beyond showing the verdict."""

    PAUSE = "pause"
    ALERT = "alert"
    REPORT = "report"
    IGNORE = "ignore"

    @property
    def rank(self) -> int:
        return {"ignore": 0, "report": 1, "alert": 2, "pause": 3}[self.value]


@dataclass(frozen=True, slots=True)
class CodePattern:
    """A compiled postscreen-style pattern: one set of allowed values per octet."""

    text: str
    octets: tuple[frozenset[int], frozenset[int], frozenset[int], frozenset[int]]

    def matches(self, address: str) -> bool:
        parts = address.split(".")
        if len(parts) != 4:
            return False
        for part, allowed in zip(parts, self.octets, strict=True):
            if not part.isdigit() or len(part) > 3 or int(part) not in allowed:
                return False
        return True

    def overlaps(self, other: CodePattern) -> bool:
        return all(a & b for a, b in zip(self.octets, other.octets, strict=True))

    def __str__(self) -> str:
        return self.text


def _octet(text: str, whole: str) -> frozenset[int]:
    if _NUMBER.match(text):
        value = int(text)
        if value > 255:
            raise ValueError(f"{whole!r}: {value} is not an octet (0-255)")
        return frozenset({value})
    if not (text.startswith("[") and text.endswith("]")) or len(text) < 3:
        raise ValueError(
            f"{whole!r}: {text!r} is neither a number nor a [..] list "
            "(write e.g. 127.0.0.2 or 127.0.0.[2..11] or 127.0.0.[2;4..7])"
        )
    values: set[int] = set()
    for item in text[1:-1].split(";"):
        item = item.strip()
        ranged = _OCTET_RANGE.match(item)
        if ranged:
            low, high = int(ranged.group(1)), int(ranged.group(2))
            if low > 255 or high > 255:
                raise ValueError(f"{whole!r}: {item!r} goes beyond 255")
            if low > high:
                raise ValueError(f"{whole!r}: range {item!r} ends before it starts")
            values.update(range(low, high + 1))
        elif _NUMBER.match(item):
            value = int(item)
            if value > 255:
                raise ValueError(f"{whole!r}: {value} is not an octet (0-255)")
            values.add(value)
        else:
            raise ValueError(f"{whole!r}: {item!r} is not a number or a low..high range")
    return frozenset(values)


def parse_code_pattern(text: str) -> CodePattern:
    """Parse ``127.0.0.[2..11]``; ``ValueError`` with a readable message when it is not one."""
    if not isinstance(text, str):
        raise ValueError(f"expected a code pattern like '127.0.0.[2..11]', got {text!r}")
    stripped = text.strip()
    if len(stripped) > MAX_PATTERN_LENGTH:
        raise ValueError(f"a code pattern is at most {MAX_PATTERN_LENGTH} characters")
    # split on dots outside brackets ("[2..11]" holds dots of its own)
    parts: list[str] = []
    depth = 0
    current = ""
    for char in stripped:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == "." and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    if len(parts) != 4 or depth != 0:
        raise ValueError(
            f"{stripped!r} is not a code pattern: expected four octets like 127.0.0.[2..11]"
        )
    octets = tuple(_octet(part.strip(), stripped) for part in parts)
    return CodePattern(stripped, (octets[0], octets[1], octets[2], octets[3]))


# --- zone names --------------------------------------------------------------------------

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def check_zone_name(zone: str) -> str:
    """A DNS name of at least two labels, lower-cased, without the trailing dot."""
    name = zone.strip().lower().rstrip(".")
    if not name or len(name) > 200:
        raise ValueError(f"{zone!r} is not a DNS zone name (1-200 characters)")
    labels = name.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{zone!r} is not a DNS zone name like zen.spamhaus.org")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise ValueError(f"{zone!r} is an address, not a DNS zone name")
    return name


# --- known zones -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KnownListing:
    codes: str
    name: str
    severity: Severity
    action: ListingAction | None = None  # None: the action of its severity


@dataclass(frozen=True, slots=True)
class KnownZone:
    zone: str
    listings: tuple[KnownListing, ...]
    errors: tuple[str, ...] = ()
    #: free daily queries (None: no documented cap)
    daily_budget: int | None = None
    description: str = ""


#: Spamhaus' error answers (domain.md): typo in the zone, query through a public/open
#: resolver, too many queries. Never listings.
SPAMHAUS_ERRORS = ("127.255.255.252", "127.255.255.254", "127.255.255.255")
#: DQS adds .250 (key disabled) and .251 (key rejected / over its limit)
SPAMHAUS_DQS_ERRORS = ("127.255.255.[250;251;252;254;255]",)
#: Spamhaus' free tier: non-commercial, under 300,000 queries a day
SPAMHAUS_FREE_BUDGET = 300_000
#: the zone suffix under which a Spamhaus DQS key may be put in a query name
DQS_SUFFIX = ".dq.spamhaus.net"

_SBL = KnownListing("127.0.0.2", "SBL", Severity.HIGH)
_CSS = KnownListing("127.0.0.3", "CSS", Severity.HIGH)
_XBL = KnownListing("127.0.0.[4..7]", "XBL", Severity.HIGH)
_DROP = KnownListing("127.0.0.9", "DROP", Severity.HIGH)
# a dedicated sending IP in the PBL is a provider's mistake: report it, do not pause for it
_PBL = KnownListing("127.0.0.[10..11]", "PBL", Severity.LOW, ListingAction.REPORT)


def _spamhaus(zone: str, listings: tuple[KnownListing, ...], description: str) -> KnownZone:
    if zone.endswith(DQS_SUFFIX):
        return KnownZone(zone, listings, SPAMHAUS_DQS_ERRORS, None, description + " (DQS)")
    return KnownZone(zone, listings, SPAMHAUS_ERRORS, SPAMHAUS_FREE_BUDGET, description)


_ZEN = (_SBL, _CSS, _XBL, _DROP, _PBL)

KNOWN_ZONES: dict[str, KnownZone] = {
    zone.zone: zone
    for zone in (
        _spamhaus("zen.spamhaus.org", _ZEN, "Spamhaus ZEN (SBL, CSS, XBL, DROP, PBL)"),
        _spamhaus("sbl.spamhaus.org", (_SBL, _CSS, _DROP), "Spamhaus SBL"),
        _spamhaus("xbl.spamhaus.org", (_XBL,), "Spamhaus XBL"),
        _spamhaus("pbl.spamhaus.org", (_PBL,), "Spamhaus PBL"),
        _spamhaus("sbl-xbl.spamhaus.org", (_SBL, _CSS, _XBL, _DROP), "Spamhaus SBL+XBL"),
        _spamhaus("zen.dq.spamhaus.net", _ZEN, "Spamhaus ZEN"),
        _spamhaus("sbl.dq.spamhaus.net", (_SBL, _CSS, _DROP), "Spamhaus SBL"),
        _spamhaus("xbl.dq.spamhaus.net", (_XBL,), "Spamhaus XBL"),
        _spamhaus("pbl.dq.spamhaus.net", (_PBL,), "Spamhaus PBL"),
        KnownZone(
            "b.barracudacentral.org",
            (KnownListing("127.0.0.2", "Barracuda BRBL", Severity.HIGH),),
            description="Barracuda Reputation Block List (register the resolver's IP)",
        ),
        KnownZone(
            "bl.spamcop.net",
            (KnownListing("127.0.0.2", "SpamCop", Severity.MEDIUM),),
            description="SpamCop (listings expire within a day)",
        ),
        KnownZone(
            "psbl.surriel.com",
            (KnownListing("127.0.0.2", "PSBL", Severity.MEDIUM),),
            description="Passive Spam Block List",
        ),
    )
}

#: any DNSBL: RFC 5782 listings are 127.0.0.0/8 answers (127.0.0.2 and up by convention)
DEFAULT_LISTINGS = (KnownListing("127.0.0.[2..255]", "listed", Severity.HIGH),)
#: 127.255.255.x is used for errors by Spamhaus and others: never a listing by default
DEFAULT_ERRORS = ("127.255.255.[0..255]",)


@dataclass(frozen=True, slots=True)
class DeadZone:
    suffix: str
    why: str


#: lists that shut down (domain.md): queries to them are refused at validation
DEAD_ZONES: tuple[DeadZone, ...] = (
    DeadZone("sorbs.net", "SORBS shut down in 2024"),
    DeadZone("dnsbl.manitu.net", "NiX Spam (manitu) shut down in 2025"),
    DeadZone("wpbl.info", "WPBL shut down"),
    DeadZone("virbl.dnsbl.bit.nl", "VIRBL shut down"),
    DeadZone("ahbl.org", "AHBL shut down in 2015 and answered 'listed' for everything"),
    DeadZone("njabl.org", "NJABL shut down in 2013"),
    DeadZone("dsbl.org", "DSBL shut down in 2009"),
)


def dead_zone(zone: str) -> DeadZone | None:
    name = zone.strip().lower().rstrip(".")
    for dead in DEAD_ZONES:
        if name == dead.suffix or name.endswith("." + dead.suffix):
            return dead
    return None


def is_dqs_zone(zone: str) -> bool:
    return zone.strip().lower().rstrip(".").endswith(DQS_SUFFIX)


# --- resolvers ---------------------------------------------------------------------------

#: public resolvers: Spamhaus refuses queries through them (answers 127.255.255.254), and
#: they would see every sending IP we check
PUBLIC_RESOLVERS: frozenset[str] = frozenset(
    {
        "8.8.8.8",
        "8.8.4.4",
        "1.1.1.1",
        "1.0.0.1",
        "1.1.1.2",
        "1.0.0.2",
        "1.1.1.3",
        "1.0.0.3",
        "9.9.9.9",
        "149.112.112.112",
        "9.9.9.10",
        "9.9.9.11",
        "208.67.222.222",
        "208.67.220.220",
        "64.6.64.6",
        "64.6.65.6",
        "94.140.14.14",
        "94.140.15.15",
        "185.228.168.9",
        "185.228.169.9",
        "76.76.2.0",
        "76.76.10.0",
        "8.26.56.26",
        "8.20.247.20",
        "4.2.2.1",
        "4.2.2.2",
        "4.2.2.3",
        "4.2.2.4",
        "4.2.2.5",
        "4.2.2.6",
        "2001:4860:4860::8888",
        "2001:4860:4860::8844",
        "2606:4700:4700::1111",
        "2606:4700:4700::1001",
        "2620:fe::fe",
        "2620:fe::9",
        "2620:119:35::35",
        "2620:119:53::53",
    }
)


@dataclass(frozen=True, slots=True)
class ResolverAddress:
    host: str
    port: int = 53

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_resolver(text: str) -> ResolverAddress:
    """``HOST[:PORT]`` with HOST an IP address (``[v6]:port`` for IPv6); never a public
    resolver."""
    if not isinstance(text, str):
        raise ValueError(f"expected an address like 127.0.0.1:53, got {text!r}")
    value = text.strip()
    port = 53
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f"{text!r}: expected [IPv6]:PORT")
            port = int(rest[1:])
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
        if not port_text.isdigit() or len(port_text) > 5:
            raise ValueError(f"{text!r}: the port must be a number, e.g. 127.0.0.1:53")
        port = int(port_text)
    else:
        host = value
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{text!r}: the resolver must be an IP address (HOST:PORT), e.g. 127.0.0.1:53"
        ) from None
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} is not within 1-65535")
    if str(address) in PUBLIC_RESOLVERS:
        raise ValueError(
            f"{text!r} is a public resolver: Spamhaus answers queries through it with error "
            "codes, and it would see every IP we check; use your own recursive resolver "
            "(e.g. unbound on 127.0.0.1)"
        )
    return ResolverAddress(str(address), port)
