"""DNS adapters: RFC 2136 dynamic updates with TSIG (``rfc2136``) and resolver queries
(``resolving``), both with dnspython."""
