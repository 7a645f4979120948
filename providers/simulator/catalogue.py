"""What the simulated account can buy: plans (the price list), locations and images.

Evidence levels follow ``hostwinds-api.md``: the plan shapes and the $9.99 / $4.99 prices are
PenguinMails' planning constants; the larger tiers, the Dallas/Amsterdam location ids and the
image list are simulator placeholders ([GUESS]).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

#: Billing cycles accepted by ``add_instance`` and their length in months.
BILLING_CYCLES: dict[str, int] = {
    "monthly": 1,
    "quarterly": 3,
    "semiannually": 6,
    "annually": 12,
    "biennially": 24,
    "triennially": 36,
}
HOURLY = "hourly"


@dataclass(frozen=True, slots=True)
class Plan:
    """One entry of the price list. ``rid`` is what ``add_instance``/``upgrade_instance`` take."""

    rid: int
    name: str
    cpu: int  # vCPUs
    ram_gb: int
    disk_gb: int
    bandwidth_gb: int  # monthly transfer
    monthly: Decimal
    sort: int
    #: a promotion on the first payment, in percent (0: none); ``POST /sim/prices`` sets it
    promo_percent: Decimal = Decimal(0)

    @property
    def ram_mb(self) -> int:
        return self.ram_gb * 1024

    def price(self, months: int) -> Decimal:
        return (self.monthly * months).quantize(Decimal("0.01"))

    def wire(self, *, current: bool = False) -> dict[str, Any]:
        """The ``get_price_list`` entry. Numbers are strings, as documented."""
        monthly = str(self.monthly.quantize(Decimal("0.01")))
        first = self.monthly * (100 - self.promo_percent) / 100
        return {
            "id": str(self.rid),
            "name": self.name,
            "ram": str(self.ram_gb),
            "cpu": str(self.cpu),
            "disk": str(self.disk_gb),
            "bandwidth": str(self.bandwidth_gb),
            "monthly": monthly,
            "quarterly": str(self.price(3)),
            "semiannually": str(self.price(6)),
            "annually": str(self.price(12)),
            "biennially": str(self.price(24)),
            "triennially": str(self.price(36)),
            "mysort": str(self.sort),
            "current": 1 if current else 0,
            "promo": 1 if self.promo_percent else 0,
            "percent": format(self.promo_percent.normalize(), "f"),
            "rid": str(self.rid),
            "mtotal": monthly,
            "cycles": list(BILLING_CYCLES),
            "firsts": str(first.quantize(Decimal("0.01"))),
            "resource": "cloud",
        }


@dataclass(frozen=True, slots=True)
class Location:
    id: int
    name: str
    country: str
    placeholder_id: bool  # True when the real id is unknown

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "country": self.country}


@dataclass(frozen=True, slots=True)
class Image:
    uuid: str
    name: str
    version: str
    category: str
    min_disk: int
    sort: int

    def slug(self) -> str:
        return normalise_template(self.name)

    def wire(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "name": self.name,
            "type": "image",
            "category": self.category,
            "version": self.version,
            "min_disk": self.min_disk,
            "sortorder": self.sort,
            "retired": 0,
            "levels": None,
            "data": None,
            "config_options": None,
            "category_name": self.category.capitalize(),
            "category_sort": 1,
            "message": None,
            "email_template": None,
        }


def normalise_template(text: str) -> str:
    return "-".join(text.strip().lower().split())


PLANS: tuple[Plan, ...] = (
    Plan(51, "Unmanaged Linux VPS 1GB", 1, 1, 30, 1000, Decimal("4.99"), 1),
    Plan(52, "Unmanaged Linux VPS 2GB", 1, 2, 50, 2000, Decimal("9.99"), 2),
    Plan(53, "Unmanaged Linux VPS 4GB", 2, 4, 75, 3000, Decimal("19.99"), 3),
    Plan(54, "Unmanaged Linux VPS 8GB", 4, 8, 150, 4000, Decimal("39.99"), 4),
    Plan(55, "Unmanaged Linux VPS 16GB", 8, 16, 300, 5000, Decimal("79.99"), 5),
)

LOCATIONS: tuple[Location, ...] = (
    Location(12, "Seattle", "US", placeholder_id=False),
    Location(13, "Dallas", "US", placeholder_id=True),
    Location(14, "Amsterdam", "NL", placeholder_id=True),
)

IMAGES: tuple[Image, ...] = (
    # The uuid is the one seen in a real add_instance request (S8); which OS it is is unknown.
    Image("b1e32484-ea0d-4875-921f-2d01fd7b4341", "Ubuntu 22.04", "22.04", "ubuntu", 10, 1),
    Image("5f0c3c0a-6a43-4a53-9d1b-0e2e9d9c2404", "Ubuntu 24.04", "24.04", "ubuntu", 10, 2),
    Image("0c9d1a7e-3b2f-4d55-8e61-5a1f7f3d1212", "Debian 12", "12", "debian", 10, 3),
    Image("7e4b8f2a-91c3-4b0e-a7d5-3c6e2f8b9a10", "Rocky Linux 9", "9", "rocky", 10, 4),
)


class Catalogue:
    """The price list, locations and images, with O(1) lookups."""

    def __init__(
        self,
        plans: tuple[Plan, ...] = PLANS,
        locations: tuple[Location, ...] = LOCATIONS,
        images: tuple[Image, ...] = IMAGES,
    ) -> None:
        self.plans = plans
        self.locations = locations
        self.images = images
        self._plans = {p.rid: p for p in plans}
        self.top_price = max((p.monthly for p in plans), default=Decimal(0))
        self._locations = {loc.id: loc for loc in locations}
        self._images: dict[str, Image] = {}
        for image in images:
            self._images[image.slug()] = image
            self._images[image.uuid] = image

    def plan(self, rid: int) -> Plan | None:
        return self._plans.get(rid)

    def location(self, location_id: int) -> Location | None:
        return self._locations.get(location_id)

    def image(self, template: str) -> Image | None:
        """An image by uuid, or by a name like ``Ubuntu 22.04`` / ``ubuntu-22.04``."""
        found = self._images.get(template)
        if found is None:
            found = self._images.get(normalise_template(template))
        return found

    def repriced(self, rid: int, monthly: Decimal, promo_percent: Decimal) -> Catalogue:
        """A copy where plan ``rid`` costs ``monthly`` (with a first-payment promotion)."""
        plans = tuple(
            dataclasses.replace(p, monthly=monthly, promo_percent=promo_percent)
            if p.rid == rid
            else p
            for p in self.plans
        )
        return Catalogue(plans, self.locations, self.images)

    def price_list(self, *, current_rid: int | None = None) -> dict[str, Any]:
        return {str(p.rid): p.wire(current=p.rid == current_rid) for p in self.plans}


DEFAULT_CATALOGUE = Catalogue()
