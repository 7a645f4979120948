"""httpx is imported without its command-line client (rich, pygments), and the library is
whole (issue 14: providers/hostwinds/lighthttpx.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _probe(code: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_client_imports_httpx_without_rich_or_pygments() -> None:
    report = _probe(
        "import json, sys\n"
        "from providers.hostwinds.client import HostwindsClient\n"
        "import httpx\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'rich', 'pygments'})\n"
        "print(json.dumps({'loaded': loaded, 'main': 'httpx._main' in sys.modules,\n"
        "                  'client': hasattr(httpx, 'AsyncClient'),\n"
        "                  'mock': hasattr(httpx, 'MockTransport')}))\n"
    )
    assert report == {"loaded": [], "main": False, "client": True, "mock": True}


def test_httpx_cli_module_is_still_importable_afterwards() -> None:
    # the block lasts only for the first import: nothing stays poisoned in sys.modules
    report = _probe(
        "import json, sys\n"
        "import providers.hostwinds\n"
        "import httpx._main\n"
        "print(json.dumps({'main': callable(httpx._main.main),\n"
        "                  'rich': 'rich' in sys.modules}))\n"
    )
    assert report == {"main": True, "rich": True}


def test_an_httpx_imported_before_is_left_alone() -> None:
    # the check can fail: imported first (with its CLI), httpx keeps httpx._main
    report = _probe(
        "import json, sys\n"
        "import httpx\n"
        "import providers.hostwinds\n"
        "print(json.dumps({'main': 'httpx._main' in sys.modules}))\n"
    )
    assert report == {"main": True}
