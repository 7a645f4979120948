"""DNS blocklist look-ups with dnspython (``checking.DnsblChecker``)."""

from providers.dnsbl.checking import (
    DQS_KEY_ENV,
    RESOLVER_ENV,
    CircuitBreaker,
    DailyBudget,
    DnsblChecker,
    DqsKey,
    reversed_name,
    system_resolver,
)

__all__ = [
    "DQS_KEY_ENV",
    "RESOLVER_ENV",
    "CircuitBreaker",
    "DailyBudget",
    "DnsblChecker",
    "DqsKey",
    "reversed_name",
    "system_resolver",
]
