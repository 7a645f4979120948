"""In-memory fakes of the project's ports, for engine and adapter tests.

``FakeCloud`` implements ``reconciler.core.ports.CloudPort`` and passes the same contract suite
as the Hostwinds client against the simulator (tests/providers/test_cloud_contract.py).
"""

from tests.fakes.clocks import FakeClock
from tests.fakes.cloud import FakeCloud

__all__ = ["FakeClock", "FakeCloud"]
