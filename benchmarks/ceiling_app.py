"""The heartbeat path's ceiling (issue 14): a bare Starlette app that only checks a beat's HMAC
signature and parses its JSON, then answers 202, served by the daemon's own server set-up
(uvicorn with httptools and the same protocol class, ``reconciler.daemon.http.make_server``,
and the daemon's garbage-collector thresholds, ``reconciler.core.collector.tune_for_service``).
No store, no replay check, no plausibility, no metrics: what the daemon's intake is compared
with by ``benchmarks/heartbeat_ingest.py``.

Run: ``python benchmarks/ceiling_app.py --port 8099`` with ``RECONCILER_NODE_MASTER_SECRET``
set (the same secret as the daemon's).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from reconciler.core.collector import tune_for_service
from reconciler.daemon.heartbeats import (
    HEARTBEATS_PATH,
    MASTER_SECRET_ENV,
    NODE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    derive_node_secret,
    sign,
)
from reconciler.daemon.http import bind_socket, make_server, serve

ACCEPTED = b'{"status":"accepted"}'


def ceiling_app(master: bytes) -> Starlette:
    secrets: dict[str, str] = {}

    async def heartbeat(request: Request) -> Response:
        body = await request.body()
        node = request.headers.get(NODE_HEADER, "")
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        signature = request.headers.get(SIGNATURE_HEADER, "")
        secret = secrets.get(node)
        if secret is None:
            secret = secrets[node] = derive_node_secret(master, node)
        expected = sign(secret, timestamp, "POST", HEARTBEATS_PATH, body)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return Response(b'{"error":"bad_signature"}', 401, media_type="application/json")
        try:
            json.loads(body)
        except ValueError:
            return Response(b'{"error":"bad_body"}', 422, media_type="application/json")
        return Response(ACCEPTED, 202, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(
        routes=[
            Route(HEARTBEATS_PATH, heartbeat, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    master = os.environ.get(MASTER_SECRET_ENV, "")
    if not master:
        print(f"{MASTER_SECRET_ENV} is not set", file=sys.stderr)
        return 2
    tune_for_service()  # the daemon's collector thresholds: the same runtime set-up
    app = ceiling_app(master.encode())
    server = make_server(app, args.host, args.port)
    asyncio.run(serve(server, bind_socket(args.host, args.port)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
