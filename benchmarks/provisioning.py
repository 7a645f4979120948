"""Provisioning: the tool's own time per node, parallelism under the API rate limit, and 100
nodes from zero as a ratio to the floor the build time and the rate limit set.

Run: ``.venv/bin/python benchmarks/provisioning.py [--nodes 100] [--build 5] [--rate 20]``.

Everything runs through the engine (``Reconciler.reconcile_once``, the code path of
``reconcile --yes``) against the Hostwinds simulator over a loopback socket and the stand-ins:
the DNS stand-in (RFC 2136 + TSIG, real queries for FCrDNS), node stand-ins (SSH on loopback;
the bundle runs as an unprivileged user with stub package tools) and the sink (SMTP; DKIM
verified with dkimpy against the published key). The stand-ins' own steps take (nearly) zero
time: builds take 0 s in part 1, and the node stand-ins run with ``instant_bundle`` (the
bundle's run, started by the tool's real SSH session, finishes at once: files, the node's DKIM
key, ``status`` = done, with no install step; see ``providers/simulator/nodes.py``), so what is
measured is the tool: its SSH sessions, uploads, DNS updates, the test mail and the store.
Part 3 also runs with the **full bundle** (``install.sh`` against the stub package tools on
every node, as the quickstart does) and prints both; ``--full-bundle-only`` skips the first.

The simulator and the stand-ins run in **a process of their own** (this script started with
``--serve-standins``), as the nodes, DNS and the sink are other machines in real life: the
tool's process runs only the tool (its event loop, SSH client side, store). ``--inline`` runs
them in the tool's process as before (one event loop plays every node too), to compare.

1. **Overhead per node** (target < 2 s): one node, build 0 s, from the ``create`` intent (just
   before ``add_instance``) to its ``verify`` step recorded; then 8 nodes at once (the median
   and the worst).
2. **Parallel under the rate limit**: N nodes with the client's default 2 requests/s: how many
   nodes were between ``add_instance`` and verified at the same time, and the peak request
   rate the simulator saw in any 1-second window (it must not exceed the limit plus burst).
3. **100 nodes from zero** (target ratio <= 1.25): build ``--build`` s, rate ``--rate``; floor
   as in ``benchmarks/convergence.py``: the provisioning steps add no API request (DNS, SSH and
   mail are other systems), so per node ``add_instance`` and ``set_rdns`` are the unavoidable
   requests: ``floor = max((1 + 2N - burst) / rate, max(0, 1 + N - burst) / rate + build)``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from providers.dns.resolving import DnsResolver
from providers.dns.rfc2136 import Rfc2136Dns, load_tsig_key
from providers.hostwinds.client import HostwindsClient
from providers.mail.dkimcheck import DkimVerifier
from providers.mail.sink import FolderSink
from providers.simulator.nodes import StandInRemote
from providers.simulator.serving import DEFAULT_API_KEY, AsyncSimulatorServer
from providers.simulator.standins import StandIns, ensure_client_key
from providers.ssh.remote import SshRemote
from reconciler.core.fleet import IntentStatus
from reconciler.engine.clocks import SystemClock
from reconciler.engine.provisioning import ProvisioningPorts
from reconciler.engine.reconciling import Reconciler
from reconciler.wiring import node_token
from specs.loading import load_spec
from state.store import open_store

SPEC = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata: {{name: {fleet}}}
provider: {{type: simulator, rate_limit: {rate}, build_time: {build}s}}
plans:
  baseline: {{rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}}
regions:
  seattle: {{location_id: 12, plan: baseline, nodes: {a}}}
  dallas: {{location_id: 13, plan: baseline, nodes: {b}}}
reconcile: {{concurrency: {concurrency}}}
provisioning: {{domain: mail.bench.test, sink: probe@sink.bench.test}}
"""


def prepare(folder: Path) -> Path:
    """The run's folder (reachable by the stand-ins' unprivileged user) and the ready DKIM key
    the stub opendkim-genkey copies."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    key = folder / "ready-dkim.key"
    if not key.exists():
        subprocess.run(
            ["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True
        )
        key.chmod(0o644)
    pub = folder / "ready-dkim.key.pub"  # its public half, for the instant bundle runs
    if not pub.exists():
        der = subprocess.run(
            ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
            check=True,
            capture_output=True,
        ).stdout
        pub.write_text(base64.b64encode(der).decode())
        pub.chmod(0o644)
    return key


SCRIPT = str(Path(__file__).resolve())
ZONE = "mail.bench.test"
SINK = "probe@sink.bench.test"


def run(
    folder: Path,
    *,
    fleet: str,
    nodes: int,
    build: float,
    rate: float,
    concurrency: int = 8,
    inline: bool = False,
    instant: bool = True,
) -> dict[str, object]:
    key = prepare(folder)
    return asyncio.run(
        measure(
            folder,
            key,
            fleet=fleet,
            nodes=nodes,
            build=build,
            rate=rate,
            concurrency=concurrency,
            inline=inline,
            instant=instant,
        )
    )


async def start_world(
    folder: Path, key: Path, build: float, instant: bool
) -> tuple[AsyncSimulatorServer, StandIns]:
    """The simulated account and the stand-ins (DNS, sink, nodes), in the running loop."""
    server = AsyncSimulatorServer(build_seconds=build, persist_interval=60.0)
    await server.start()
    world = server.world

    def ptr(ip: str) -> str | None:
        for inst in list(world.instances.values()):
            if ip in inst.rdns:
                return inst.rdns[ip]
        return None

    def name_of(ip: str) -> str | None:
        for inst in list(world.instances.values()):
            if inst.main_ip == ip:
                return inst.srvrname
        return None

    stand_ins = StandIns(
        folder / "state", zone=ZONE, sink_address=SINK, ptr_source=ptr, name_of=name_of
    )
    stand_ins.nodes.ready_key = key
    stand_ins.nodes.instant_bundle = instant
    await stand_ins.start()
    return server, stand_ins


async def serve_standins(folder: Path, build: float, instant: bool) -> None:
    """The child process (``--serve-standins``): the simulator and the stand-ins, plus a
    loopback control port answering "the stand-in's SSH port for this IP" (one line each),
    until stdin closes."""
    key = prepare(folder)
    server, stand_ins = await start_world(folder, key, build, instant)

    async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                _, port = await stand_ins.nodes.endpoint(line.decode().strip())
                writer.write(f"{port}\n".encode())
                await writer.drain()
        finally:
            writer.close()

    ctl = await asyncio.start_server(control, "127.0.0.1", 0)
    ready = {
        "api_url": server.api_url,
        "dns_port": stand_ins.dns_server.port,
        "control_port": ctl.sockets[0].getsockname()[1],
    }
    print(json.dumps(ready), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # the parent closes it when done
    ctl.close()
    ran = count_commands(stand_ins)
    await stand_ins.stop()
    await server.stop()
    # where the stand-ins' CPU went: this process (SSH servers, DNS, SMTP, DKIM signing, the
    # simulator) and the commands it ran for the nodes (shells, stub tools)
    own = resource.getrusage(resource.RUSAGE_SELF)
    commands = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "process": own.ru_utime + own.ru_stime,
                "commands": commands.ru_utime + commands.ru_stime,
                "commands_run": ran,
            }
        ),
        flush=True,
    )


def count_commands(stand_ins: StandIns) -> int:
    """Commands the node stand-ins ran (one SSH session each)."""
    return sum(len(node.commands) for node in stand_ins.nodes.nodes.values())


class CountingTransport(httpx.AsyncHTTPTransport):
    """The client's transport, noting when each request left (the peak rate is measured at
    the wire, after the client's token bucket)."""

    def __init__(self) -> None:
        super().__init__(local_address="0.0.0.0", retries=0)
        self.sent: list[float] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(time.monotonic())
        return await super().handle_async_request(request)

    def peak(self, window: float = 1.0) -> int:
        times = sorted(self.sent)
        best = first = 0
        for last, at in enumerate(times):
            while at - times[first] > window:
                first += 1
            best = max(best, last - first + 1)
        return best


class RemoteEndpoints:
    """The node stand-ins' endpoints, asked of the stand-in process (a connection per
    question, so many nodes coming up at once are answered concurrently; cached per IP)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._known: dict[str, int] = {}

    async def endpoint(self, ip: str) -> tuple[str, int]:
        if ip not in self._known:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            try:
                writer.write(f"{ip}\n".encode())
                await writer.drain()
                self._known[ip] = int((await reader.readline()).decode())
            finally:
                writer.close()
        return "127.0.0.1", self._known[ip]

    async def aclose(self) -> None:
        self._known.clear()


async def measure(
    folder: Path,
    key: Path,
    *,
    fleet: str,
    nodes: int,
    build: float,
    rate: float,
    concurrency: int,
    inline: bool,
    instant: bool,
) -> dict[str, object]:
    spec_path = folder / f"{fleet}.yaml"
    spec_path.write_text(
        SPEC.format(
            fleet=fleet,
            rate=rate,
            build=build,
            a=nodes // 2,
            b=nodes - nodes // 2,
            concurrency=concurrency,
        )
    )
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    child: asyncio.subprocess.Process | None = None
    split: dict[str, float] = {}
    world: tuple[AsyncSimulatorServer, StandIns] | None = None
    endpoints: RemoteEndpoints | None = None
    remote: StandInRemote
    if inline:
        world = await start_world(folder, key, build, instant)
        server, stand_ins = world
        api_url = server.api_url
        dns = stand_ins.dns()
        resolver = stand_ins.resolver()
        remote = stand_ins.remote()
        sink: FolderSink = stand_ins.sink
    else:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            SCRIPT,
            "--serve-standins",
            str(folder),
            "--build",
            str(build),
            *(["--instant"] if instant else []),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert child.stdout is not None
        ready = json.loads(await child.stdout.readline())
        api_url = ready["api_url"]
        dns = Rfc2136Dns(
            "127.0.0.1",
            ZONE,
            port=ready["dns_port"],
            key=load_tsig_key(folder / "state" / "dns" / "tsig.key"),
            timeout=5.0,
        )
        resolver = DnsResolver([("127.0.0.1", ready["dns_port"])], timeout=5.0)
        endpoints = RemoteEndpoints(ready["control_port"])
        client_key = ensure_client_key(folder / "state" / "ssh" / "id_ed25519")
        remote = StandInRemote(endpoints, SshRemote(client_key))
        sink = FolderSink(folder / "state" / "sink", SINK)
    store = open_store(f"sqlite:///{folder / 'state.db'}")
    master = os.urandom(32)
    ports = ProvisioningPorts(
        dns=dns,
        resolver=resolver,
        remote=remote,
        sink=sink,
        dkim=DkimVerifier(resolver),
        token_for=lambda node: node_token(master, node),
        poll_interval=0.05,
        probe_wait=30.0,
        fcrdns_wait=5.0,
    )
    loaded = load_spec([spec_path])
    transport = CountingTransport()
    client = HostwindsClient(api_url, DEFAULT_API_KEY, rate_limit=rate, transport=transport)
    reconciler = Reconciler(
        loaded, client, store, SystemClock(), poll_interval=0.05, provisioning=ports
    )
    try:
        started = time.perf_counter()
        started_at = time.monotonic()  # the clock of the transport's stamps
        cpu_before = time.process_time()
        _plan, report = await reconciler.reconcile_once(dry_run=False)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        recorded = store.load_fleet(fleet).nodes
        journal = store.journal(fleet, limit=10 * nodes + 100)
    finally:
        await client.aclose()
        store.close()
        await remote.aclose()
        if endpoints is not None:
            await endpoints.aclose()
        if world is not None:
            await world[1].stop()
            await world[0].stop()
        if child is not None:
            assert child.stdin is not None
            child.stdin.close()
            assert child.stdout is not None
            last = (await child.stdout.read()).decode().strip().splitlines()
            split = json.loads(last[-1]) if last else {}
            await child.wait()
    assert report is not None
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    # the stand-in process and every command it ran (in-process: the commands only)
    node_cpu = (children.ru_utime + children.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    created = {
        i.target: i.created_at
        for i in journal
        if i.kind == "create" and i.status is IntentStatus.DONE and i.created_at is not None
    }
    spans: dict[str, tuple[float, float]] = {}
    node_side: list[float] = []  # seconds install.sh ran on each node stand-in
    for run_dir in (folder / "state" / "nodes").glob("*/home/.fleet-reconciler/bundles/*"):
        try:
            began = float((run_dir / "started_at").read_text())
            ended = float((run_dir / "finished_at").read_text())
        except (OSError, ValueError):
            continue
        node_side.append(ended - began)
    for node in recorded:
        verify = node.step("verify")
        start = created.get(node.name)
        if verify is None or verify.at is None or start is None:
            continue
        spans[node.name] = (start.timestamp(), verify.at.timestamp())
    return {
        "elapsed": elapsed,
        "done": len(report.done),
        "failed": len(report.failed) + len(report.waiting),
        "verified": len(spans),
        "spans": spans,
        "node_side": node_side,
        "peak_rate": transport.peak(),
        # the API part: requests sent, list rounds, when the last one left (the floor's end)
        "requests": sum(client.calls.values()),
        "lists": client.calls.get("get_instances", 0),
        "last_request": max(transport.sent, default=started_at) - started_at,
        "cpu": cpu,  # CPU seconds of the tool's process (with the stand-ins when inline)
        "standins_cpu": node_cpu,
        # own process: the stand-ins' process itself, and the node commands it ran
        "standins_split": split if child is not None else {},
    }


def describe_split(split: object) -> str:
    if not isinstance(split, dict) or not split:
        return ""
    return (
        f" (the stand-ins' process {split['process']:.1f} s, the {split['commands_run']} node "
        f"commands with every process they started {split['commands']:.1f} s)"
    )


def max_overlap(spans: dict[str, tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans.values()] + [(e, -1) for _, e in spans.values()])
    best = current = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


def steps_timeline(folder: Path, fleet: str) -> dict[str, float]:
    """Median seconds from the first create to each recorded step (where the time goes)."""
    store = open_store(f"sqlite:///{folder / 'state.db'}")
    try:
        nodes = store.load_fleet(fleet).nodes
        journal = store.journal(fleet, limit=10_000)
    finally:
        store.close()
    created = [i.created_at.timestamp() for i in journal if i.kind == "create" and i.created_at]
    if not created:
        return {}
    start = min(created)
    times: dict[str, list[float]] = {}
    for node in nodes:
        for step in node.steps:
            if step.at is not None:
                times.setdefault(step.name, []).append(step.at.timestamp() - start)
    return dict(sorted(((k, statistics.median(v)) for k, v in times.items()), key=lambda kv: kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--build", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--parallel-nodes", type=int, default=12)
    parser.add_argument("--runs", type=int, default=3, help="runs of part 3 (the median)")
    parser.add_argument("--parts", default="123", help="which parts to run, e.g. 3")
    parser.add_argument(
        "--inline",
        action="store_true",
        help="also run part 3 with the stand-ins in the tool's process, to compare",
    )
    parser.add_argument(
        "--full-bundle-only",
        action="store_true",
        help="part 3 only with the full bundle (install.sh against stub tools on each node)",
    )
    parser.add_argument("--serve-standins", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--instant", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_standins is not None:
        asyncio.run(serve_standins(args.serve_standins, args.build, args.instant))
        return
    base = Path(tempfile.mkdtemp(prefix="fr-bench-provision-", dir="/tmp"))
    base.chmod(0o755)
    try:
        if "1" in args.parts:
            part1(base)
        if "2" in args.parts:
            part2(base, args.parallel_nodes)
        if "3" in args.parts:
            part3(
                base,
                args.nodes,
                args.build,
                args.rate,
                args.runs,
                args.inline,
                full_only=args.full_bundle_only,
            )
        load = os.getloadavg()
        print(f"machine load (1/5/15 min): {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def part1(base: Path) -> None:
    one = run(base / "one", fleet="one", nodes=1, build=0.0, rate=50.0)
    (span,) = one["spans"].values()  # type: ignore[attr-defined]
    print("1. add_instance -> verified node, build 0 s, stand-ins taking no time")
    script = one["node_side"][0] if one["node_side"] else 0.0  # type: ignore[index]
    print(
        f"   one node: {span[1] - span[0]:.2f} s end to end, of which the bootstrap script "
        f"ran {script:.2f} s on the stand-in: tool overhead {span[1] - span[0] - script:.2f} s "
        f"(target < 2 s)"
    )
    eight = run(base / "eight", fleet="eight", nodes=8, build=0.0, rate=50.0)
    times = sorted(e - s for s, e in eight["spans"].values())  # type: ignore[attr-defined]
    print(
        f"   8 nodes at once: median {statistics.median(times):.2f} s, "
        f"worst {times[-1]:.2f} s, all 8 in {eight['elapsed']:.2f} s"
    )


def part2(base: Path, n: int) -> None:
    par = run(base / "par", fleet="par", nodes=n, build=5.0, rate=2.0)
    spans = par["spans"]
    print(f"2. {n} nodes, client rate limit 2 req/s (default), build 5 s")
    print(
        f"   nodes between add_instance and verified at the same time: at most "
        f"{max_overlap(spans)} (reconcile.concurrency paces the API calls only; up to 64 "  # type: ignore[arg-type]
        f"nodes in their DNS/SSH/mail steps at once); {par['verified']}/{n} verified in "
        f"{par['elapsed']:.1f} s; peak API requests in any 1 s window: {par['peak_rate']}"
    )
    burst = max(1, math.ceil(2.0))
    floor2 = max((1 + 2 * n - burst) / 2.0, max(0, 1 + n - burst) / 2.0 + 5.0)
    print(f"   floor {floor2:.1f} s -> ratio {par['elapsed'] / floor2:.3f}")  # type: ignore[operator]


def part3(
    base: Path,
    n: int,
    build: float,
    rate: float,
    runs: int,
    inline: bool,
    *,
    full_only: bool = False,
) -> None:
    burst = max(1, math.ceil(rate))
    floor = max((1 + 2 * n - burst) / rate, max(0, 1 + n - burst) / rate + build)
    print(f"3. 0 -> {n} verified nodes, build {build:g} s, rate limit {rate:g} req/s")
    print(
        f"   floor: max((1 + 2*{n} - {burst}) / {rate:g}, "
        f"max(0, 1 + {n} - {burst}) / {rate:g} + {build:g}) = {floor:.2f} s"
    )
    modes: list[tuple[str, bool, bool]] = []
    if not full_only:
        modes.append(("zero-time steps (bundle run finishes at once), own process", False, True))
    modes.append(("full bundle (install.sh, stub tools) on each node, own process", False, False))
    if inline:
        modes.append(("full bundle, stand-ins in the tool's process", True, False))
    for label, in_process, instant in modes:
        ratios: list[float] = []
        for i in range(runs):
            folder = base / f"big-{int(in_process)}{int(instant)}-{i}"
            big = run(
                folder,
                fleet="big",
                nodes=n,
                build=build,
                rate=rate,
                inline=in_process,
                instant=instant,
            )
            ratio = big["elapsed"] / floor  # type: ignore[operator]
            ratios.append(ratio)
            steps = ", ".join(f"{k} {v:.1f}" for k, v in steps_timeline(folder, "big").items())
            load = os.getloadavg()[0]
            print(
                f"   {label}, run {i + 1}: {big['elapsed']:.2f} s, ratio {ratio:.3f}; "
                f"{big['verified']}/{n} verified, {big['failed']} failed or waiting; load "
                f"{load:.1f}; CPU: tool {big['cpu']:.1f} s "
                f"({big['cpu'] / n * 1000:.0f} ms per node), stand-ins and node commands "
                f"{big['standins_cpu']:.1f} s{describe_split(big['standins_split'])}; "
                f"median s to each step: {steps}; API: {big['requests']} requests "
                f"({big['lists']} get_instances), the last at {big['last_request']:.2f} s"
            )
            shutil.rmtree(folder, ignore_errors=True)
        median = statistics.median(ratios)
        print(
            f"   {label}: median ratio {median:.3f} of {runs} run(s) (target <= 1.25): "
            f"{'PASS' if median <= 1.25 else 'FAIL'}"
        )


if __name__ == "__main__":
    main()
