"""Mail adapters: the internal sink test mails are sent to (``sink``), and DKIM verification
against the key published in DNS with dkimpy (``dkimcheck``)."""
