"""DNS blocklist look-ups with dnspython (``checking.DnsblChecker``)."""

from providers.dnsbl.checking import (
    CircuitBreaker,
    DailyBudget,
    DnsblChecker,
    DqsKey,
    reversed_name,
    system_resolver,
)

__all__ = [
    "CircuitBreaker",
    "DailyBudget",
    "DnsblChecker",
    "DqsKey",
    "reversed_name",
    "system_resolver",
]
