"""Benchmarks of the mesh on 127.0.0.1 (figures, not a test). Run through `scripts/bench`.

(a) baseline: bare py-libp2p request/response between two hosts, a new stream per call,
    the same newline framing; (a') the same on one stream kept open; (b) a praxis-node remote
    call of a no-op `python` tool (on /praxis/tool/1.1.0, streams reused), (a), (a') and (b)
    measured in alternating batches so that all see the same machine load;
(c) calls per second with 32 concurrent callers and the provider in its own process, on 1.1.0
    and on 1.0.0 (the Go wire: a new stream per call); (d) how long a 10-node mesh takes until
    every node knows every tool; (e) 1,000 progress updates through two hops; (f) cancel
    latency from the caller to an engine one and two hops away (an in-process engine double).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import multiaddr
import trio
from libp2p.crypto.ed25519 import create_new_key_pair

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.cli.logs import configure_logging  # noqa: E402
from node.config import LimitsSection, P2PSection  # noqa: E402
from node.mesh.host import build_host, parse_peer_addr  # noqa: E402
from protocols.tool import TOOL_PROTOCOL  # noqa: E402
from tests.helpers import make_node, node_config, py_tool, start_mesh, wait_all_know  # noqa: E402

BASELINE_PROTOCOL = "/bench/echo/1.0.0"
REUSED_PROTOCOL = "/bench/echo-reused/1.0.0"


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def read_line(stream) -> bytes:  # type: ignore[no-untyped-def]
    buf = b""
    while b"\n" not in buf:
        chunk = await stream.read(65536)
        if not chunk:
            raise EOFError("stream ended")
        buf += chunk
    return buf


BATCH = 20  # calls per batch; baseline and node batches alternate so both see the same machine


async def latency_pair(
    calls: int, concurrency: int, concurrent_calls: int
) -> tuple[list[float], list[float], list[float], float]:
    """(a), (a') and (b), measured in alternating batches, then (b) with concurrent callers."""
    server = build_host(create_new_key_pair(), P2PSection(enable_mdns=False), LimitsSection())
    client = build_host(create_new_key_pair(), P2PSection(enable_mdns=False), LimitsSection())

    async def handler(stream) -> None:  # type: ignore[no-untyped-def]
        try:
            await read_line(stream)
            await stream.write(b'{"id":"1","result":{"content":[],"isError":false}}\n')
        finally:
            await stream.close()

    async def reused_handler(stream) -> None:  # type: ignore[no-untyped-def]
        try:
            while True:
                await read_line(stream)
                await stream.write(b'{"id":"1","result":{"content":[],"isError":false}}\n')
        except Exception:  # the client closed the stream: the end of the run
            pass
        finally:
            await stream.close()

    server.set_stream_handler(BASELINE_PROTOCOL, handler)
    server.set_stream_handler(REUSED_PROTOCOL, reused_handler)
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    base: list[float] = []
    reused: list[float] = []
    node: list[float] = []
    async with server.run(listen), client.run(listen), AsyncExitStack() as stack:
        info = parse_peer_addr(f"{server.get_addrs()[0]}")
        await client.connect(info)
        caller, _ = await start_mesh(stack, [[], [py_tool("noop", "noop")]])
        await wait_all_know([caller], {"noop"})

        async def bare_call() -> None:
            stream = await client.new_stream(info.peer_id, [BASELINE_PROTOCOL])
            await stream.write(b'{"id":"1","name":"noop","arguments":{},"timestamp":1}\n')
            await read_line(stream)
            await stream.close()

        kept = await client.new_stream(info.peer_id, [REUSED_PROTOCOL])

        async def reused_call() -> None:
            await kept.write(b'{"id":"1","name":"noop","arguments":{},"timestamp":1}\n')
            await read_line(kept)

        async def node_call() -> None:
            await caller.call("noop", {})

        for warm_up in (bare_call, reused_call, node_call):
            for _ in range(BATCH):
                await warm_up()
        for _ in range(max(1, calls // BATCH)):
            for call, samples in ((bare_call, base), (reused_call, reused), (node_call, node)):
                for _ in range(BATCH):
                    t0 = trio.current_time()
                    await call()
                    samples.append(trio.current_time() - t0)
        await kept.close()
        await client.disconnect(info.peer_id)

        per_worker = concurrent_calls // concurrency

        async def worker() -> None:
            for _ in range(per_worker):
                await caller.call("noop", {})

        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        rate = per_worker * concurrency / (trio.current_time() - t0)
    return base, reused, node, rate


async def throughput_across_processes(concurrency: int, total: int, workdir: Path, *, go_wire: bool = False) -> float:
    """Calls/s from this process's node to a provider node running as its own OS process
    (`go_wire`: the caller offers only /praxis/tool/1.0.0, a new stream per call)."""
    import json
    import subprocess

    import yaml

    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "provider.yaml"
    config.write_text(yaml.safe_dump({
        "agent": {"name": "provider", "tools": [
            {"name": "noop", "engine": "python", "engineSpec": {"callable": "node.cli.demo_tools:noop"}}]},
        "p2p": {"port": 0, "enable_mdns": False}, "mcp": {"enabled": False},
        "limits": {"max_inflight_per_peer": 256},
    }))
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "node.cli.main", "run", "-c", str(config), "--announce", "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        buf = b""
        with trio.fail_after(30):
            while b"\n" not in buf:
                buf += await proc.stdout.receive_some(4096)
        addr = json.loads(buf.split(b"\n")[0])["addrs"][0]
        async with AsyncExitStack() as stack:
            caller = make_node(node_config("caller", [], bootstrap=[addr]))
            await stack.enter_async_context(caller.running())
            await wait_all_know([caller], {"noop"})
            if go_wire:
                caller.links.calls.offer = [TOOL_PROTOCOL]
            per_worker = total // concurrency

            async def worker() -> None:
                for _ in range(per_worker):
                    await caller.call("noop", {})

            for _ in range(50):
                await caller.call("noop", {})
            t0 = trio.current_time()
            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    nursery.start_soon(worker)
            return per_worker * concurrency / (trio.current_time() - t0)
    finally:
        proc.terminate()
        with trio.move_on_after(5):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def convergence(count: int) -> float:
    async with AsyncExitStack() as stack:
        t0 = trio.current_time()
        first = make_node(node_config("n0", [py_tool("t0", "noop")]))
        await stack.enter_async_context(first.running())
        nodes = [first]
        for i in range(1, count):
            node = make_node(node_config(f"n{i}", [py_tool(f"t{i}", "noop")], bootstrap=first.addrs[:1]))
            await stack.enter_async_context(node.running())
            nodes.append(node)
        await wait_all_know(nodes, {f"t{i}" for i in range(count)}, timeout=60)
        return trio.current_time() - t0


async def conversation(cancels: int) -> tuple[int, bool, float, list[float], list[float]]:
    """(e) 1,000 progress updates from an engine two hops away: how many arrive, in order, how
    fast; (f) cancel latency, caller to engine, one and two hops (an in-process engine double)."""
    from tests.call_doubles import FLOOD, HANG, RecordingEvents, TalkingEngine, start_chain

    engine = TalkingEngine()
    async with AsyncExitStack() as stack:
        a, b, c = await start_chain(stack, [FLOOD, HANG], engine)
        events = RecordingEvents()
        t0 = trio.current_time()
        await a.router.request(b.peer_id, "flood", {"progress": 1000}, trio.current_time() + 30, events)
        took = trio.current_time() - t0
        seen = [p.progress for p in events.progress_seen]
        ordered = seen == sorted(seen) and len(set(seen)) == len(seen)
        hops: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(cancels):
            for count, start in ((1, lambda: a.call("hang", {})),
                                 (2, lambda: a.router.request(b.peer_id, "hang", {}, trio.current_time() + 30))):
                engine.started, engine.cancelled = trio.Event(), trio.Event()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(start)
                    await engine.started.wait()
                    t0 = trio.current_time()
                    nursery.cancel_scope.cancel()
                with trio.fail_after(10):
                    await engine.cancelled.wait()
                hops[count].append(trio.current_time() - t0)
        return len(seen), ordered, took, hops[1], hops[2]


async def main(args: argparse.Namespace) -> None:
    a, r, b, rate = await latency_pair(args.calls, 32, args.concurrent_calls)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        rate_procs = await throughput_across_processes(32, args.concurrent_calls, Path(tmp))
        rate_go = await throughput_across_processes(32, args.concurrent_calls, Path(tmp), go_wire=True)
    conv = await convergence(10)
    delivered, ordered, took, cancel1, cancel2 = await conversation(20)
    ma, mr, mb = statistics.median(a), statistics.median(r), statistics.median(b)
    for label, samples, median in (("(a)  bare libp2p request/response, new stream  ", a, ma),
                                   ("(a') bare libp2p request/response, same stream ", r, mr),
                                   ("(b)  praxis-node remote no-op call (1.1.0)     ", b, mb)):
        print(f"{label}: median {median * 1000:.2f} ms, p95 {pct(samples, 95) * 1000:.2f} ms ({len(samples)} calls)")
    print(f"    ratio b/a  (median): {mb/ma:.2f}   (target < 0.8)")
    print(f"    ratio b/a' (median): {mb/mr:.2f}   (target <= 1.3)")
    print(f"(c) 32 concurrent callers, provider in its own process: {rate_procs:.0f} calls/s on 1.1.0, "
          f"{rate_go:.0f} calls/s on 1.0.0 (the Go wire), over {args.concurrent_calls} calls   (target >= 800)")
    print(f"    (both nodes sharing one process and core: {rate:.0f} calls/s)")
    print(f"(d) 10-node mesh convergence: {conv:.2f} s   (target < 5 s)")
    order = "in order" if ordered else "REORDERED"
    print(f"(e) 1,000 progress updates through two hops: {delivered} delivered ({order}), "
          f"the rest dropped by the rate limit (50/s, burst 50); call done in {took * 1000:.0f} ms")
    for hops, samples in ((1, cancel1), (2, cancel2)):
        print(f"(f) cancel, caller to engine, {hops} hop{'s' if hops > 1 else ''}: median "
              f"{statistics.median(samples) * 1000:.1f} ms, max {max(samples) * 1000:.1f} ms ({len(samples)} calls)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrent-calls", type=int, default=2000)
    configure_logging("WARNING")
    logging.getLogger("praxis").setLevel(logging.ERROR)
    trio.run(main, parser.parse_args())
