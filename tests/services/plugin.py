"""Pytest fixtures for the real counterparts installed by `.ci/services` (registered in
tests/conftest.py). Each skips locally when its binaries are missing and fails under CI=true.

* ``services_env``: the env file's paths (:class:`ServiceEnv`).
* ``bind_server``: a fresh named (authoritative only) per test; ``bind_factory(recursion=...)``
  for more servers, or a resolver with forward zones; ``blackhole_dns``: a socket that never
  answers.
* ``sshd_server``: a fresh sshd per test, as an unprivileged uid with stub tools first on PATH;
  ``sshd_factory(user=..., extra_config=...)`` for several.
* ``postconf_bin``, ``promtool_bin``, ``chromium_bin``, ``systemd_analyze_bin``: ready-to-run
  commands; ``chromium``: headless DOM dumps and screenshots (tools.py, which also has
  ``dkim_dnsfunc`` for dkimpy against the BIND fixture).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.services.bind import BindServer, Blackhole, start_bind
from tests.services.environment import ServiceEnv
from tests.services.sshd import SshdServer, start_sshd
from tests.services.tools import Chromium


@pytest.fixture(scope="session")
def services_env() -> ServiceEnv:
    return ServiceEnv.load()


@pytest.fixture
def bind_factory(services_env: ServiceEnv) -> Iterator[Callable[..., BindServer]]:
    """``bind_factory(recursion=False)`` starts another named; all stop after the test."""
    with contextlib.ExitStack() as stack:

        def start(*, recursion: bool = False) -> BindServer:
            return stack.enter_context(start_bind(services_env, recursion=recursion))

        yield start


@pytest.fixture
def bind_server(bind_factory: Callable[..., BindServer]) -> BindServer:
    """named on 127.0.0.1:<free port> (UDP+TCP), no zones yet; ``set_zone`` adds them."""
    return bind_factory()


@pytest.fixture
def blackhole_dns() -> Iterator[Blackhole]:
    """127.0.0.1:<port> where DNS queries (UDP and TCP) are never answered."""
    with Blackhole() as hole:
        yield hole


@pytest.fixture
def sshd_factory(services_env: ServiceEnv) -> Iterator[Callable[..., SshdServer]]:
    """``sshd_factory(user="fleet", extra_config=[...])`` starts another sshd."""
    with contextlib.ExitStack() as stack:

        def start(*, user: str = "fleet", extra_config: list[str] | None = None) -> SshdServer:
            return stack.enter_context(
                start_sshd(services_env, user=user, extra_config=extra_config)
            )

        yield start


@pytest.fixture
def sshd_server(sshd_factory: Callable[..., SshdServer]) -> SshdServer:
    """sshd on 127.0.0.1:<free port>: key-only, unprivileged uid, stub tools first on PATH."""
    return sshd_factory()


@pytest.fixture(scope="session")
def postconf_bin(services_env: ServiceEnv) -> Path:
    """Postfix's ``postconf`` (run it as ``postconf -c RENDERED_DIR -n``)."""
    return services_env.require_command("postconf")


@pytest.fixture(scope="session")
def promtool_bin(services_env: ServiceEnv) -> Path:
    """Prometheus' ``promtool`` (``check rules FILE``, ``test rules FILE``)."""
    return services_env.require_command("promtool")


@pytest.fixture(scope="session")
def chromium_bin(services_env: ServiceEnv) -> Path:
    """Headless-capable Chromium (use the ``chromium`` fixture for the right flags)."""
    return services_env.require_command("chromium")


@pytest.fixture(scope="session")
def chromium(chromium_bin: Path) -> Chromium:
    """``chromium.dump_dom(url)`` and ``chromium.screenshot(url, path)``, headless."""
    return Chromium(chromium_bin)


@pytest.fixture(scope="session")
def systemd_analyze_bin(services_env: ServiceEnv) -> Path:
    """The host's ``systemd-analyze`` (``verify UNIT``)."""
    return services_env.require_command("systemd-analyze")
