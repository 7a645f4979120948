"""A CloudPort wrapper that counts API calls by action for ``/metrics``."""

from __future__ import annotations

from reconciler.core.fleet import CreateRequest, Location, ObservedServer, PricePlan
from reconciler.core.ports import CloudPort
from reconciler.daemon.metrics import DaemonMetrics


class CountingCloud:
    """Implements CloudPort by delegating to ``inner``; each call counts once, by the
    Hostwinds action it stands for."""

    def __init__(self, inner: CloudPort, metrics: DaemonMetrics) -> None:
        self._inner = inner
        self._calls = metrics.api_calls

    def _count(self, action: str) -> None:
        self._calls.labels(action).inc()

    async def list_servers(self) -> list[ObservedServer]:
        self._count("get_instances")
        return await self._inner.list_servers()

    async def get_server(self, service_id: int) -> ObservedServer:
        self._count("get_instance")
        return await self._inner.get_server(service_id)

    async def find_servers_by_name(self, name: str) -> list[ObservedServer]:
        self._count("find_by_name")
        return await self._inner.find_servers_by_name(name)

    async def create_server(self, request: CreateRequest) -> None:
        self._count("add_instance")
        await self._inner.create_server(request)

    async def terminate(self, service_id: int) -> None:
        self._count("terminate")
        await self._inner.terminate(service_id)

    async def upgrade_instance(self, service_id: int, rid: int) -> None:
        self._count("upgrade_instance")
        await self._inner.upgrade_instance(service_id, rid)

    async def upgrade_server(self, service_id: int) -> None:
        self._count("upgrade_server")
        await self._inner.upgrade_server(service_id)

    async def confirm_upgrade(self, service_id: int) -> None:
        self._count("confirm_upgrade")
        await self._inner.confirm_upgrade(service_id)

    async def revert_upgrade(self, service_id: int) -> None:
        self._count("revert_upgrade")
        await self._inner.revert_upgrade(service_id)

    async def boot_server(self, service_id: int) -> None:
        self._count("boot")
        await self._inner.boot_server(service_id)

    async def set_rdns(self, service_id: int, ip: str, hostname: str) -> None:
        self._count("set_rdns")
        await self._inner.set_rdns(service_id, ip, hostname)

    async def list_ips(self, service_id: int) -> list[str]:
        self._count("list_ips")
        return await self._inner.list_ips(service_id)

    async def price_list(self) -> list[PricePlan]:
        self._count("get_price_list")
        return await self._inner.price_list()

    async def locations(self) -> list[Location]:
        self._count("get_locations")
        return await self._inner.locations()

    async def aclose(self) -> None:
        await self._inner.aclose()
