"""Scale harness (figures, not a test): N praxis nodes on 127.0.0.1, each serving its own tool.
Run through `scripts/bench-scale N`; `--help` lists the options.

Every node is built from its own config folder (node.yaml, identity.key, and scale_tool.py:
a `python` tool `who_<name>` that returns the node's name); all bootstrap from the first
`--bootstraps` nodes. The harness talks to the nodes only through their public surfaces: the
MCP endpoint of each node (`tools/call`, as any MCP client), `GET /status`, and /proc of
their PIDs. Phases, in order:

1. start: node 0, then the others (`--start-parallel` at a time); "up" is the node's ready line.
2. converge: from when the last node is up, every caller calls the tools of its planned
   targets through its own MCP endpoint (`--sample`), each pair until it first returns the
   target's name; a caller's failed pairs are called again after `--poll` seconds, the pause
   doubling up to `--poll-max`. The figure is the time of the last pair's first success.
3. idle: no calls for `--idle` seconds; CPU time and RSS of each PID from /proc, connections
   from each node's /status (peers connected), established TCP sockets per PID.
4. lookup (`--lookups` times): a new node with a new tool joins; a far node (one started last,
   never a bootstrap node) calls that tool every `--lookup-poll` s from the moment the newcomer
   is up until it succeeds. The newcomer is stopped afterwards.
5. restart: a node in the middle is stopped by its PID (`--restart-signal`), called while down,
   then started again from the same folder (same identity, same ports); up to 3 others call its
   tool until each succeeds, timed from its start.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from shutil import rmtree
from typing import Any

import httpx
import trio
from scale_fleet import Fleet, NodeSpec, PackedFleet, ProcessFleet, parse_overrides, pin_ports, write_node
from scale_probe import (
    OK,
    McpSession,
    MeshUpkeep,
    Outcome,
    connections_from_metrics,
    connections_from_status,
    get_status,
    get_text,
    upkeep_from_metrics,
)
from scale_procfs import cpu_seconds, established_sockets, port_states, rss_bytes, socket_inodes, tcp_tables
from scale_report import plan_pairs, report_rows, resolve_sample, summary, table

EXIT_OK, EXIT_FAILED, EXIT_PHASE_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 130
MAX_NODES = 1000
# Every node here dials from 127.0.0.1: the per-address inbound limit (32) would make a node with
# 32 peers refuse every newcomer, which no mesh spread over addresses meets. `--set` overrides it.
LOOPBACK_SETTINGS = ["limits.max_connections_per_ip=128"]
MiB = 1024 * 1024
STATUS_READS_IN_FLIGHT = 16  # the idle phase's /status reads at once
FEWEST_SHOWN = 5  # nodes named in the report as listing the fewest tools (one alone knows nobody)


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} bench-scale: {message}", file=sys.stderr, flush=True)


def harness_cpu() -> float:
    """CPU seconds this process (the harness, not the nodes) has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Run:
    """One run: its fleet, its nodes, an MCP session with each, and the figures so far."""

    def __init__(self, args: argparse.Namespace, folder: Path, fleet: Fleet, http: httpx.AsyncClient) -> None:
        self.args = args
        self.folder = folder
        self.fleet = fleet
        self.http = http
        self.rng = random.Random(args.seed)
        self.overrides = parse_overrides(LOOPBACK_SETTINGS + args.set)
        self.specs: list[NodeSpec] = []
        self.sessions: dict[str, McpSession] = {}
        self.bootstrap: list[str] = []

    def session(self, spec: NodeSpec) -> McpSession:
        if spec.name not in self.sessions:
            self.sessions[spec.name] = McpSession(self.http, spec.mcp_url, self.args.call_timeout)
        return self.sessions[spec.name]

    async def start_node(self, spec: NodeSpec) -> None:
        await self.fleet.start(spec)
        pin_ports(spec)  # a restart listens on the same ports


# ----- phases -------------------------------------------------------------------------------


async def start_mesh(run: Run) -> float:
    """Start the nodes; return when the last one is up (trio time)."""
    args = run.args
    width = len(str(args.nodes - 1))
    run.specs = [NodeSpec(f"n{i:0{width}d}", run.folder / f"n{i:0{width}d}") for i in range(args.nodes)]
    seeds = run.specs[:args.bootstraps]
    for spec in seeds:  # one after the other: each bootstraps from those before it
        write_node(spec, list(run.bootstrap), run.overrides)
        await run.start_node(spec)
        await run.session(spec).open()
        run.bootstrap.append(spec.addrs[0])
    limiter = trio.CapacityLimiter(args.start_parallel)
    started = len(seeds)

    async def start_one(spec: NodeSpec) -> None:
        nonlocal started
        async with limiter:
            write_node(spec, list(run.bootstrap), run.overrides)
            await run.start_node(spec)
            await run.session(spec).open()  # so that calls, when they start, pay no handshake
            started += 1
            if started % 10 == 0 or started == args.nodes:
                log(f"{started}/{args.nodes} nodes up")

    async with trio.open_nursery() as nursery:
        for spec in run.specs[len(seeds):]:
            nursery.start_soon(start_one, spec)
    return trio.current_time()


async def call_until_ok(session: McpSession, target: NodeSpec, deadline: float, poll: float,
                        outcomes: Counter[str]) -> float | None:
    """Call target's tool until it answers with the target's name; the trio time of that answer."""
    while trio.current_time() < deadline:
        outcome = await session.call(target.tool, target.name)
        outcomes[outcome.kind] += 1
        if outcome.ok:
            return trio.current_time()
        await trio.sleep(min(poll, max(0.0, deadline - trio.current_time())))  # pace a failing pair
    return None


async def converge(run: Run, since: float) -> dict[str, Any]:
    """Phase 2: time from `since` until every planned pair has succeeded once.

    Each caller calls its pending targets (at most `--per-node-calls` at once, and at most
    `--calls-in-flight` in the whole run, so the harness cannot swamp the nodes it measures),
    then waits before calling the failed ones again: `--poll`, doubling up to `--poll-max`.
    """
    args = run.args
    by_name = {s.name: s for s in run.specs}
    sample = resolve_sample(args.sample, args.nodes)
    plan = plan_pairs([s.name for s in run.specs], sample, args.observers, run.rng)
    pairs = sum(len(t) for t in plan.values())
    deadline = since + args.timeout
    first_ok: dict[tuple[str, str], float] = {}
    outcomes: Counter[str] = Counter()
    examples: dict[str, str] = {}
    everywhere = trio.CapacityLimiter(args.calls_in_flight)
    own0 = harness_cpu()
    nodes0 = nodes_cpu(run)

    async def caller(name: str) -> None:
        session = run.session(by_name[name])
        pending = list(plan[name])
        run.rng.shuffle(pending)
        per_node = trio.CapacityLimiter(args.per_node_calls)
        pause = args.poll
        while pending and trio.current_time() < deadline:
            failed: list[str] = []

            async def one(target: str, failed: list[str]) -> None:
                async with per_node, everywhere:
                    if trio.current_time() >= deadline:
                        failed.append(target)
                        return
                    outcome: Outcome = await session.call(by_name[target].tool, target)
                outcomes[outcome.kind] += 1
                if outcome.ok:
                    first_ok[(name, target)] = trio.current_time() - since
                else:
                    failed.append(target)
                    examples.setdefault(outcome.kind, outcome.detail)

            async with trio.open_nursery() as nursery:
                for target in pending:
                    nursery.start_soon(one, target, failed)
            pending = failed
            if pending:
                await trio.sleep(min(pause, max(0.0, deadline - trio.current_time())))
                pause = min(pause * 2, args.poll_max)

    async def progress() -> None:
        while True:
            await trio.sleep(10)
            log(f"  {trio.current_time() - since:.0f} s: {len(first_ok)}/{pairs} pairs ok; calls {dict(outcomes)}")

    async with trio.open_nursery() as watch:
        watch.start_soon(progress)
        async with trio.open_nursery() as nursery:
            for name in plan:
                nursery.start_soon(caller, name)
        watch.cancel_scope.cancel()
    per_caller = [max(first_ok[(c, t)] for t in targets) for c, targets in plan.items()
                  if targets and all((c, t) in first_ok for t in targets)]
    elapsed = trio.current_time() - since
    harness = (harness_cpu() - own0) / elapsed * 100
    nodes = (nodes_cpu(run) - nodes0) / elapsed * 100
    return {
        "seconds": round(max(first_ok.values()), 3) if len(first_ok) == pairs and first_ok else None,
        "timeoutSeconds": args.timeout,
        "plan": "every pair" if sample == 0 else f"{sample} random per node + all from the last {args.observers}",
        "pairs": pairs, "pairsOk": len(first_ok),
        "pairSeconds": summary(list(first_ok.values())),
        "callerAllOkSeconds": summary(per_caller),
        "callersAllOk": len(per_caller),
        "calls": sum(outcomes.values()), "callsPerSecond": round(sum(outcomes.values()) / elapsed, 1),
        "outcomes": dict(outcomes), "failureExamples": examples,
        "slowestPairs": [{"caller": c, "target": t, "seconds": round(sec, 3)}
                         for (c, t), sec in sorted(first_ok.items(), key=lambda kv: -kv[1])[:5]],
        "harnessCpuPercent": round(harness, 1),  # the harness shares the machine with the nodes
        "nodesCpuPercent": round(nodes, 1),  # all node processes together: near 200 is both cores busy
    }


def nodes_cpu(run: Run) -> float:
    """CPU seconds all node processes have used so far (those that ended are left out)."""
    return sum(seconds for pid in run.fleet.processes() if (seconds := cpu_seconds(pid)) is not None)


async def idle(run: Run) -> dict[str, Any]:
    """Phase 3: resources with no calls for `--idle` seconds."""
    processes = run.fleet.processes()
    own0 = harness_cpu()
    upkeep0 = await read_upkeep(run)
    cpu0 = {pid: cpu_seconds(pid) for pid in processes}
    t0 = trio.current_time()
    await trio.sleep(run.args.idle)  # the measurement window itself
    elapsed = trio.current_time() - t0
    cpu1 = {pid: cpu_seconds(pid) for pid in processes}
    upkeep1 = await read_upkeep(run)
    meshes = [upkeep.gossip_mesh for _, upkeep in upkeep1.values() if upkeep.gossip_mesh is not None]
    endpoints: dict[int, set[int]] = {}
    for spec in run.specs:  # the harness's own HTTP connections to the endpoints do not count
        endpoints.setdefault(spec.pid, set()).add(int(spec.base_url.rsplit(":", 1)[1]))
    sockets = established_sockets(processes, endpoints)
    cpu, rss, socks = [], [], []
    total_cpu = 0.0
    for pid, nodes in processes.items():
        before, after, memory = cpu0[pid], cpu1[pid], rss_bytes(pid)
        if before is None or after is None or memory is None or not nodes:
            continue
        total_cpu += after - before
        cpu.extend([(after - before) / elapsed / len(nodes) * 100] * len(nodes))
        rss.extend([memory / MiB / len(nodes)] * len(nodes))
        count = sockets.get(pid)
        if count is not None:
            socks.extend([count / len(nodes)] * len(nodes))
    connections: list[float] = []
    known: dict[str, int] = {}  # node name -> tools its /status lists
    source = "status"
    reading = trio.CapacityLimiter(STATUS_READS_IN_FLIGHT)

    async def read_status(spec: NodeSpec) -> None:
        nonlocal source
        async with reading:
            status = await get_status(run.http, spec.base_url, run.args.call_timeout)
            tools = status.get("tools") if status is not None else None
            if isinstance(tools, list):
                known[spec.name] = len(tools)
            count = connections_from_status(status)
            if count is None:  # a /status of another shape: the metrics gauge
                source = "metrics"
                count = connections_from_metrics(await get_text(run.http, f"{spec.base_url}/metrics",
                                                                run.args.call_timeout))
        if count is not None:
            connections.append(count)

    async with trio.open_nursery() as nursery:  # one by one, 200 busy nodes took minutes
        for spec in run.specs:
            nursery.start_soon(read_status, spec)
    harness = (harness_cpu() - own0) / elapsed * 100
    return {
        "windowSeconds": round(elapsed, 1),
        "cpuPercent": summary(cpu, 2), "cpuPercentTotal": round(total_cpu / elapsed * 100, 1),
        "rssMiB": summary(rss, 1), "sockets": summary(socks, 1),
        "socketsTotal": sum(c for c in sockets.values() if c is not None),
        "connections": summary(connections, 1), "connectionsSource": source,
        "connectionsReported": len(connections),
        "toolsKnown": summary(list(known.values()), 1),  # as each node's /status lists them (its own included)
        "fewestTools": dict(sorted(known.items(), key=lambda item: item[1])[:FEWEST_SHOWN]),
        "upkeep": upkeep_rates(upkeep0, upkeep1),
        "gossipMeshPeers": summary(meshes, 1),  # after the window
        "gossipMeshEmpty": meshes.count(0),
        "gossipMeshEmptyNodes": sorted(name for name, (_, upkeep) in upkeep1.items() if upkeep.gossip_mesh == 0),
        "harnessCpuPercent": round(harness, 2),
    }


Reads = dict[str, tuple[float, MeshUpkeep]]  # node name -> (when read, what /metrics said)


async def read_upkeep(run: Run) -> Reads:
    """Each node's upkeep from its /metrics, with when it was read."""
    out: Reads = {}
    reading = trio.CapacityLimiter(STATUS_READS_IN_FLIGHT)

    async def read(spec: NodeSpec) -> None:
        async with reading:
            upkeep = upkeep_from_metrics(await get_text(run.http, f"{spec.base_url}/metrics", run.args.call_timeout))
            if upkeep is not None:
                out[spec.name] = (trio.current_time(), upkeep)

    async with trio.open_nursery() as nursery:
        for spec in run.specs:
            nursery.start_soon(read, spec)
    return out


def upkeep_rates(before: Reads, after: Reads) -> dict[str, Any]:
    """Per counter: per node per second over the idle window (each node over its own two reads), and
    the whole mesh's per second (the nodes' rates added up)."""
    rates: dict[str, list[float]] = {}
    for name, (t1, upkeep1) in after.items():
        t0, upkeep0 = before.get(name, (t1, upkeep1))
        if t1 - t0 <= 0:
            continue
        for key, value in upkeep1.counts.items():
            rates.setdefault(key, []).append((value - upkeep0.counts.get(key, 0.0)) / (t1 - t0))
    return {key: {"perNodePerSecond": summary(values, 3), "meshPerSecond": round(sum(values), 2)}
            for key, values in sorted(rates.items())}


def far_callers(run: Run, exclude: set[str]) -> list[NodeSpec]:
    """Nodes to call from, the last started first, never a bootstrap node nor one of `exclude`."""
    seeds = len(run.bootstrap)
    found = [s for s in reversed(run.specs[seeds:]) if s.name not in exclude]
    return found or [s for s in run.specs if s.name not in exclude]


async def lookup(run: Run) -> dict[str, Any]:
    """Phase 4: a newcomer's tool, called from a far node from the moment the newcomer is up."""
    args = run.args
    seconds: list[float] = []
    rows = []
    callers = far_callers(run, set())
    for index in range(args.lookups):
        spec = NodeSpec(f"j{index:02d}", run.folder / f"j{index:02d}")
        write_node(spec, list(run.bootstrap), run.overrides)
        caller = callers[index % len(callers)]
        outcomes: Counter[str] = Counter()
        await run.start_node(spec)
        try:
            ready = trio.current_time()
            ok = await call_until_ok(run.session(caller), spec, ready + args.timeout, args.lookup_poll, outcomes)
        finally:
            await run.fleet.stop(spec)
        took = None if ok is None else round(ok - ready, 3)
        if took is not None:
            seconds.append(took)
        rows.append({"newcomer": spec.name, "caller": caller.name, "seconds": took, "outcomes": dict(outcomes)})
        log(f"lookup {index + 1}/{args.lookups}: {spec.name} from {caller.name}: "
            f"{'not found' if took is None else f'{took:.3f} s'}")
    return {"seconds": summary(seconds), "runs": rows, "found": len(seconds), "tried": args.lookups}


async def restart(run: Run) -> dict[str, Any]:
    """Phase 5: stop a node by its PID, start it again from the same folder, time the calls."""
    args = run.args
    victim = run.specs[len(run.specs) // 2]
    callers = far_callers(run, {victim.name})[:3]
    deadline = trio.current_time() + args.timeout
    before: Counter[str] = Counter()
    async with trio.open_nursery() as nursery:  # every caller knows it first
        for spec in callers:
            nursery.start_soon(call_until_ok, run.session(spec), victim, deadline, args.poll, before)
    how = "node stopped in its worker" if run.fleet.mode == "packed" else f"SIG{args.restart_signal} by PID"
    t_stop = trio.current_time()
    if isinstance(run.fleet, ProcessFleet):
        await run.fleet.stop(victim, signal.Signals[f"SIG{args.restart_signal}"])
    else:
        await run.fleet.stop(victim)
    stopped = trio.current_time()
    down: Counter[str] = Counter()
    for spec in callers:  # seen failing, as a caller would see it
        down[(await run.session(spec).call(victim.tool, victim.name)).kind] += 1
    t_start = trio.current_time()
    try:
        await run.start_node(victim)
    except RuntimeError as exc:  # say what still holds its port, if that is why
        port = int(victim.addrs[0].split("/tcp/")[1].split("/")[0])
        owners = {pid: socket_inodes(pid) or set() for pid in [*run.fleet.processes(), victim.pid]}
        states = port_states(tcp_tables(), port, owners)
        raise RuntimeError(f"{str(exc).strip()}; sockets on port {port} now: {states} "
                           f"({run.fleet.mode} mode; the stopped node ran in PID {victim.pid})") from None
    up = trio.current_time()
    oks: dict[str, float | None] = {}
    after: Counter[str] = Counter()

    async def again(spec: NodeSpec) -> None:
        oks[spec.name] = await call_until_ok(run.session(spec), victim, up + args.timeout, args.restart_poll, after)

    async with trio.open_nursery() as nursery:
        for spec in callers:
            nursery.start_soon(again, spec)
    times = [t - t_start for t in oks.values() if t is not None]
    return {
        "victim": victim.name, "how": how, "callers": [s.name for s in callers],
        "knownBefore": before.get(OK, 0) == len(callers),
        "stopSeconds": round(stopped - t_stop, 3), "startSeconds": round(up - t_start, 3),
        "whileDown": dict(down), "outcomesAfter": dict(after),
        "firstOkFromStart": round(min(times), 3) if times else None,
        "allOkFromStart": round(max(times), 3) if len(times) == len(callers) else None,
        "allOkFromUp": round(max(times) - (up - t_start), 3) if len(times) == len(callers) else None,
    }


# ----- the run ------------------------------------------------------------------------------


async def timed(label: str, phase: Callable[[], Any]) -> Any:
    log(f"{label}...")
    t0 = trio.current_time()
    result = await phase()
    log(f"{label}: done in {trio.current_time() - t0:.1f} s")
    return result


class Interrupted(Exception):
    """SIGINT or SIGTERM reached the harness; every node was stopped."""


async def measure(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The whole run; SIGINT (Ctrl-C) or SIGTERM stops it, and every node, by PID."""
    workers = math.ceil(args.nodes / args.nodes_per_process) if args.mode == "packed" else args.nodes
    figures: dict[str, Any] = {"bench": "scale", "mode": args.mode, "nodes": args.nodes, "processes": workers,
                               "nodesPerProcess": args.nodes_per_process if args.mode == "packed" else 1,
                               "set": args.set, "seed": args.seed}
    received: list[str] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for signum in signals:
                    received.append(signal.Signals(signum).name)
                    log(f"received {received[0]}; stopping every node")
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(watch)
            await run_phases(args, folder, workers, figures)
            nursery.cancel_scope.cancel()
    if received:
        raise Interrupted(received[0])
    return figures


async def run_phases(args: argparse.Namespace, folder: Path, workers: int, figures: dict[str, Any]) -> None:
    t_run = trio.current_time()
    fleet: Fleet
    pool = args.calls_in_flight + 32
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    async with trio.open_nursery() as background, \
            httpx.AsyncClient(limits=limits, timeout=args.call_timeout, trust_env=False) as http:
        if args.mode == "packed":
            fleet = PackedFleet(workers, folder, args.start_timeout, args.node_log_level)
        else:
            fleet = ProcessFleet(args.start_timeout, args.node_log_level)
        run = Run(args, folder, fleet, http)
        try:
            if isinstance(fleet, PackedFleet):
                await timed(f"starting {workers} worker processes", lambda: fleet.open(background))
            t0 = trio.current_time()
            last_up = await timed(f"starting {args.nodes} nodes ({args.mode})", lambda: start_mesh(run))
            figures["startSeconds"] = round(last_up - t0, 3)
            phases: list[tuple[str, str, Callable[[], Any]]] = [
                ("converge", "calling until every node calls every tool", lambda: converge(run, last_up))]
            if args.idle > 0:
                phases.append(("idle", f"idle for {args.idle:g} s", lambda: idle(run)))
            if args.lookups > 0:
                phases.append(("lookup", "lookups of new tools", lambda: lookup(run)))
            if args.restart:
                phases.append(("restart", "restarting a node", lambda: restart(run)))
            for key, label, phase in phases:
                try:
                    figures[key] = await timed(label, phase)
                except Exception as exc:  # the phase's figure says why; later phases still run
                    log(f"{label}: failed: {type(exc).__name__}: {exc}")
                    figures[key] = {"error": " ".join(f"{type(exc).__name__}: {exc}".split())[:600]}
                    figures["failedPhases"] = [*figures.get("failedPhases", []), key]
        finally:
            await fleet.aclose()
            background.cancel_scope.cancel()
    figures["runSeconds"] = round(trio.current_time() - t_run, 1)


def positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not positive")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/bench-scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("nodes", type=positive(int), help="how many nodes (at least 2)")
    p.add_argument("--mode", choices=("processes", "packed"), default="processes",
                   help="one `praxis-node run` process per node (default), or several nodes per worker process")
    p.add_argument("--nodes-per-process", type=positive(int), default=10, help="packed mode (default 10)")
    p.add_argument("--timeout", type=positive(float), default=120.0,
                   help="bound of each waiting phase: converge, each lookup, the restart (default 120 s)")
    p.add_argument("--json", action="store_true", help="print only the JSON line (progress stays on stderr)")
    p.add_argument("--bootstraps", type=positive(int), default=1,
                   help="every node bootstraps from the first this many nodes (default 1)")
    p.add_argument("--start-parallel", type=positive(int), default=2,
                   help="nodes starting at the same time (default 2: a start is mostly CPU)")
    p.add_argument("--start-timeout", type=positive(float), default=90.0, help="per node or worker (default 90 s)")
    p.add_argument("--sample", default="auto",
                   help="targets per caller: auto (every pair up to 20 nodes, else 10), all, or a count")
    p.add_argument("--observers", type=int, default=3,
                   help="with a sample: the last this many nodes started call every tool (default 3)")
    p.add_argument("--per-node-calls", type=positive(int), default=4,
                   help="calls in flight through one node's endpoint while converging (default 4)")
    p.add_argument("--call-timeout", type=positive(float), default=10.0, help="one call (default 10 s)")
    p.add_argument("--calls-in-flight", type=positive(int), default=16,
                   help="calls in flight in the whole run while converging (default 16)")
    p.add_argument("--poll", type=positive(float), default=0.25,
                   help="first pause before a caller's failed pairs are called again (default 0.25 s)")
    p.add_argument("--poll-max", type=positive(float), default=1.0,
                   help="the pause doubles up to this (default 1 s): the resolution of the figure")
    p.add_argument("--idle", type=float, default=30.0, help="idle window in seconds; 0 skips it (default 30)")
    p.add_argument("--lookups", type=int, default=3, help="newcomers joining one at a time (default 3)")
    p.add_argument("--lookup-poll", type=positive(float), default=0.05, help="(default 0.05 s)")
    p.add_argument("--no-restart", dest="restart", action="store_false", help="skip the restart phase")
    p.add_argument("--restart-signal", choices=("TERM", "KILL"), default="TERM",
                   help="how the restarted node is stopped in processes mode (default TERM)")
    p.add_argument("--restart-poll", type=positive(float), default=0.1, help="(default 0.1 s)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="a config key for every node, e.g. --set limits.max_connections_per_ip=64 (repeatable)")
    p.add_argument("--node-log-level", default="WARNING", help="the nodes' log level (default WARNING)")
    p.add_argument("--seed", type=int, default=1, help="of the random sample and call order (default 1)")
    p.add_argument("--keep", action="store_true", help="keep the run's folder (configs, keys, logs)")
    return p


def _holds(exc: BaseException, kind: type[BaseException]) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(kind) is not None
    return isinstance(exc, kind)


def _reasons(exc: BaseException) -> list[str]:
    """One line per error, out of trio's exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [line for inner in exc.exceptions for line in _reasons(inner)]
    return [f"{type(exc).__name__}: {exc}"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 2 <= args.nodes <= MAX_NODES:
        print(f"bench-scale: nodes must be from 2 to {MAX_NODES}", file=sys.stderr)
        return EXIT_FAILED
    try:
        parse_overrides(args.set)
        resolve_sample(args.sample, args.nodes)
    except ValueError as exc:
        print(f"bench-scale: {exc}", file=sys.stderr)
        return EXIT_FAILED
    args.bootstraps = min(args.bootstraps, args.nodes - 1)
    folder = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    keep = args.keep
    try:
        figures = trio.run(measure, args, folder)
    except BaseException as exc:  # shown as one line with the folder of logs, then the exit code
        keep = True
        if _holds(exc, KeyboardInterrupt) or _holds(exc, Interrupted):
            log(f"interrupted; every process was stopped; logs in {folder}")
            return EXIT_INTERRUPTED
        log(f"failed: {'; '.join(_reasons(exc))}; logs in {folder}")
        return EXIT_FAILED
    finally:
        if not keep:
            rmtree(folder, ignore_errors=True)
    if not args.json:
        print(table(report_rows(figures)))
    print(json.dumps(figures, separators=(",", ":")))
    return EXIT_PHASE_FAILED if figures.get("failedPhases") else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
