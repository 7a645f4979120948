"""The status page with 1,000 nodes in headless Chromium (target: renders in under a second).

Run: ``.venv/bin/python benchmarks/status_page.py [--nodes 1000] [--runs 5]
[--screenshot docs/status-page.png --screenshot-nodes 40]``. Needs Chromium from
``.ci/services`` (``FLEET_CHROMIUM``, or the env file ``.cache/services.env``).

Builds a daemon in-process over a synthetic fleet of N nodes (every life-cycle status,
heartbeats, warming and silent nodes: ``tests/ops/demofleet.py``), serves its HTTP app on
127.0.0.1, and drives Chromium over the DevTools protocol: for each run a fresh navigation to
``/status`` and, from the browser's Navigation Timing, the time to the response's last byte
(server: render + transfer), to DOMContentLoaded and to the load event (parsed, styled, laid
out, SVG included), plus the first contentful paint. Prints each figure's median and worst, the
page's size, and the server-side render time measured in-process. With ``--screenshot``, also
writes a PNG of a smaller fleet for the docs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from reconciler.daemon.http import create_app
from tests.daemon.serving import serve_in_thread
from tests.ops.browser import FLAGS
from tests.ops.test_status_page import make_daemon
from tests.ops.tools import find_tool


class DevTools:
    """A minimal Chrome DevTools Protocol client: one page target over a WebSocket."""

    def __init__(self, ws_url: str) -> None:
        rest = ws_url.removeprefix("ws://")
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += self.sock.recv(4096)
        if b" 101 " not in answer.split(b"\r\n", 1)[0]:
            raise RuntimeError(answer.decode(errors="replace"))
        self._buffer = answer.split(b"\r\n\r\n", 1)[1]
        self._next = 0

    def _recv_exact(self, size: int) -> bytes:
        while len(self._buffer) < size:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _frame(self) -> bytes:
        message = b""
        while True:
            head = self._recv_exact(2)
            final, length = head[0] & 0x80, head[1] & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._recv_exact(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._recv_exact(8))[0]
            message += self._recv_exact(length)
            if final:
                return message

    def send(self, method: str, **params: Any) -> int:
        self._next += 1
        payload = json.dumps({"id": self._next, "method": method, "params": params}).encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        elif len(payload) < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", len(payload))
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)
        return self._next

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = self.send(method, **params)
        while True:
            message = json.loads(self._frame())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(message["error"])
                result: dict[str, Any] = message.get("result", {})
                return result

    def wait_event(self, method: str) -> dict[str, Any]:
        while True:
            message = json.loads(self._frame())
            if message.get("method") == method:
                params: dict[str, Any] = message.get("params", {})
                return params


TIMING = """JSON.stringify((() => {
  const n = performance.getEntriesByType('navigation')[0];
  const p = performance.getEntriesByName('first-contentful-paint')[0];
  return {response: n.responseEnd, dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd,
          fcp: p ? p.startTime : null, size: n.transferSize || n.encodedBodySize,
          rows: document.querySelectorAll('#nodes tr').length - 1};
})())"""


def measure(chromium: Any, url: str, runs: int) -> list[dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        process = subprocess.Popen(
            [
                chromium.path,
                *FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "--window-size=1400,1000",
                "about:blank",
            ],
            env={**chromium.env, "HOME": profile},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 60
            while not port_file.exists() or not port_file.read_text().strip():
                if time.monotonic() > deadline:
                    raise RuntimeError("Chromium did not open its DevTools port")
                time.sleep(0.05)
            port = int(port_file.read_text().split()[0])
            targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
            page = next(t for t in targets if t.get("type") == "page")
            tools = DevTools(page["webSocketDebuggerUrl"])
            tools.call("Page.enable")
            tools.call("Performance.enable")
            tools.call("Network.enable")
            tools.call("Network.setCacheDisabled", cacheDisabled=True)
            results = []
            for _ in range(runs + 1):  # the first run warms the browser up; not counted
                tools.call("Page.navigate", url=url)
                tools.wait_event("Page.loadEventFired")
                value = tools.call("Runtime.evaluate", expression=TIMING, returnByValue=True)
                result = json.loads(value["result"]["value"])
                metrics = {
                    m["name"]: m["value"] for m in tools.call("Performance.getMetrics")["metrics"]
                }
                # main-thread time the renderer spent on this document's tasks (seconds ->
                # ms; the counters start again with each new document)
                result["task"] = metrics.get("TaskDuration", 0.0) * 1000
                result["layout"] = metrics.get("LayoutDuration", 0.0) * 1000
                result["style"] = metrics.get("RecalcStyleDuration", 0.0) * 1000
                results.append(result)
            return results[1:]
        finally:
            process.terminate()
            process.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--screenshot", type=Path, default=None)
    parser.add_argument("--screenshot-nodes", type=int, default=40)
    args = parser.parse_args()
    chromium = find_tool("chromium")
    if chromium is None:
        print("Chromium not found: run .ci/services (FLEET_CHROMIUM)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        daemon = make_daemon(Path(tmp) / "big", args.nodes)
        started = time.perf_counter()
        renders = []
        for _ in range(5):
            started = time.perf_counter()
            code, body = daemon.status_page(None, None)
            renders.append(time.perf_counter() - started)
        assert code == 200
        app = create_app(daemon, daemon.metrics, daemon.verifier, daemon.batcher)
        with serve_in_thread(app) as url:
            results = measure(chromium, url + "/status", args.runs)
            # the peer, measured in the same browser and moment: a one-line page
            baseline = measure(chromium, url + "/healthz", args.runs)
        rows = {int(r["rows"]) for r in results}
        print(f"status page, {args.nodes} nodes ({len(body):,} bytes of HTML), {args.runs} runs")
        print(f"  rows rendered by the browser: {sorted(rows)}")
        print(
            f"  server render (in-process): median {statistics.median(renders) * 1000:.0f} ms, "
            f"worst {max(renders) * 1000:.0f} ms"
        )
        for key, label in (
            ("response", "response received (server render + transfer)"),
            ("fcp", "first contentful paint"),
            ("dcl", "DOMContentLoaded (parsed)"),
            ("load", "load event (styled, laid out, SVG)"),
            ("task", "renderer main-thread busy time (all tasks)"),
            ("style", "  of which style recalculation"),
            ("layout", "  of which layout"),
        ):
            values = [float(r[key]) for r in results if r.get(key) is not None]
            if values:
                print(
                    f"  {label}: median {statistics.median(values):.0f} ms, "
                    f"worst {max(values):.0f} ms"
                )
        base = statistics.median(float(r["load"]) for r in baseline)
        print(f"  peer: a one-line page (/healthz) loads in {base:.0f} ms (median) on this machine")
        worst = max(float(r["load"]) for r in results)
        print(f"  target: load under 1000 ms -> {'met' if worst < 1000 else 'NOT met'}")
        if args.screenshot is not None:
            small = make_daemon(Path(tmp) / "small", args.screenshot_nodes)
            small_app = create_app(small, small.metrics, small.verifier, small.batcher)
            from tests.ops.browser import screenshot

            with serve_in_thread(small_app) as small_url:
                screenshot(small_url + "/status", args.screenshot.resolve(), 1400, 1500)
            print(f"  screenshot of {args.screenshot_nodes} nodes: {args.screenshot}")
    return 0


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    sys.exit(main())
