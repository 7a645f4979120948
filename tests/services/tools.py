"""One-shot real tools: Postfix's postconf, Prometheus' promtool, headless Chromium, and a DKIM
verifier (dkimpy) that reads its keys from the BIND fixture.

The commands are `.ci/services`' wrappers (they set LD_LIBRARY_PATH for the unpacked libraries),
so a test may also hand their paths to product code, or put ``services_env.bin_dir`` on PATH.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

from tests.services.environment import ServiceEnv
from tests.services.processes import remove_tree, run_to_completion

# The flags this machine's notes give for headless Chromium as root on a closed network.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
)


def run_postconf(
    postconf: Path, config_dir: Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``postconf -c CONFIG_DIR ARGS``; e.g. ``-n`` (non-default settings), ``-h NAME``, ``-M``
    (master.cf). Postfix warns on stderr about unused (misspelt) parameters."""
    return subprocess.run(
        [str(postconf), "-c", str(config_dir), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def run_promtool(
    promtool: Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``promtool ARGS``, e.g. ``check rules FILE`` or ``test rules FILE``."""
    return subprocess.run(
        [str(promtool), *args], capture_output=True, text=True, check=False, timeout=timeout
    )


@dataclass(frozen=True)
class Chromium:
    """Headless Chromium, one fresh profile per call, killed (whole tree) when done."""

    binary: Path
    timeout: float = 90.0

    def _run(self, url: str, extra: Sequence[str], *, virtual_time_budget_ms: int) -> str:
        folder = Path(tempfile.mkdtemp(prefix="fr-chromium-"))
        try:
            env = {
                "PATH": "/usr/bin:/bin",
                "HOME": str(folder),
                "XDG_CONFIG_HOME": str(folder / "config"),
                "XDG_CACHE_HOME": str(folder / "cache"),
                "LANG": "C.UTF-8",
            }
            argv = [
                str(self.binary),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={folder / 'profile'}",
                f"--virtual-time-budget={virtual_time_budget_ms}",
                *extra,
                url,
            ]
            code, out, err = run_to_completion(
                "chromium", argv, env=env, folder=folder, timeout=self.timeout
            )
            if code != 0:
                raise RuntimeError(f"chromium exited with {code} for {url}: {err[-3000:]}")
            return out
        finally:
            remove_tree(folder)

    def dump_dom(self, url: str, *, virtual_time_budget_ms: int = 5000) -> str:
        """The DOM after scripts ran (``--dump-dom``), as HTML."""
        return self._run(url, ["--dump-dom"], virtual_time_budget_ms=virtual_time_budget_ms)

    def screenshot(
        self,
        url: str,
        path: Path,
        *,
        width: int = 1280,
        height: int = 800,
        virtual_time_budget_ms: int = 5000,
    ) -> Path:
        """A PNG of the page at `width` x `height` CSS pixels."""
        path = path.resolve()
        self._run(
            url,
            [f"--screenshot={path}", f"--window-size={width},{height}"],
            virtual_time_budget_ms=virtual_time_budget_ms,
        )
        if not path.exists():
            raise RuntimeError(f"chromium wrote no screenshot to {path}")
        return path


def dkim_dnsfunc(host: str, port: int, timeout: float = 5.0) -> Callable[..., bytes]:
    """A ``dnsfunc`` for dkimpy (``dkim.verify(message, dnsfunc=...)``) that reads TXT records
    from the DNS server at host:port (the BIND fixture) instead of the system resolver."""

    def txt(name: bytes | str, timeout: float = timeout) -> bytes:
        qname = name.decode() if isinstance(name, bytes) else name
        request = dns.message.make_query(qname, "TXT")
        try:
            answer = dns.query.udp(request, host, port=port, timeout=timeout)
        except dns.exception.Timeout:
            return b""
        for rrset in answer.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                return b"".join(rrset[0].strings)
        return b""

    return txt


def tool_command(env: ServiceEnv, name: str) -> Path:
    """The ready-to-run command `name` (skips locally / fails in CI when absent)."""
    return env.require_command(name)
