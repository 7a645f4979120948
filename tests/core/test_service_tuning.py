"""The runtime set-up of a long-running service (the daemon, and the heartbeat ceiling app
alike): the collector's thresholds and the thread switch interval (issue 14)."""

from __future__ import annotations

import gc
import sys

from reconciler.core.collector import SERVICE_SWITCH_INTERVAL, SERVICE_THRESHOLDS, tune_for_service


def test_a_service_gets_its_collector_thresholds_and_a_short_switch_interval() -> None:
    thresholds, interval = gc.get_threshold(), sys.getswitchinterval()
    try:
        tune_for_service()
        assert gc.get_threshold() == SERVICE_THRESHOLDS
        # a writer thread back from the database waits at most this long for the GIL
        assert sys.getswitchinterval() == SERVICE_SWITCH_INTERVAL
        assert SERVICE_SWITCH_INTERVAL < 0.005  # Python's default
    finally:
        gc.set_threshold(*thresholds)
        sys.setswitchinterval(interval)
