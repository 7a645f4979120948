"""The quickstart fleet for the ops tests that need it applied first: the same spec, with the
simulator's builds instant and the API rate limit raised. The quickstart keeps the real API's
pace (2 requests a second, 2 s builds) to show a new user how an apply goes, which made each
of these fixtures wait about 5 s for what none of their tests checks."""

from __future__ import annotations

import re
from pathlib import Path

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"


def fast_quickstart() -> str:
    text = QUICKSTART.read_text()
    fast, found = re.subn(
        r"^  build_time: .*$", "  build_time: 0s\n  rate_limit: 50", text, count=1, flags=re.M
    )
    assert found == 1, "examples/quickstart.yaml has no provider build_time line any more"
    return fast
