"""A faithful simulator of the Hostwinds Cloud API (``POST /cloud/api.php``), with fault
injection and admin endpoints under ``/sim/``. See docs/simulator.md."""

from providers.simulator.serving import AsyncSimulatorServer, SimulatorServer

__all__ = ["AsyncSimulatorServer", "SimulatorServer"]
