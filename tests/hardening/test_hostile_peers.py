"""Suite 2 of issue 5: slow and hostile peers against one running Node, over 127.0.0.1.

At the same time: one peer opens 200 tool streams and sends nothing; one sends 10 MiB with no
newline (three times); one sends garbage on tool and card streams; one opens unknown protocols
over and over. Meanwhile a well-behaved Node keeps calling a tool on the target: every one of
its calls must succeed. Every hostile stream must be cut within its limit, and the memory
(peak RSS) of this process, which runs the target node, must stay bounded.
"""

from __future__ import annotations

import random
import resource
from collections import Counter
from contextlib import AsyncExitStack

import pytest
import trio
from libp2p.host.exceptions import StreamFailure
from libp2p.network.stream.exceptions import StreamError
from libp2p.protocol_muxer.exceptions import MultiselectClientError

from protocols.card import CARD_PROTOCOL
from protocols.tool import TOOL_PROTOCOL
from tests.helpers import ECHO_PARAMS, make_node, node_config, py_tool, wait_all_know
from tests.raw_peer import open_stream, raw_host, stream_ends

IDLE = 1.0  # the target's limits.idle_timeout_seconds
CUT_BOUND = IDLE + 2.0  # a silent stream must be ended this long after it was opened
MAX_FRAME = 4 * 1024 * 1024  # the default limits.max_frame_bytes
SILENT_STREAMS = 200
BIG_BYTES = 10 * 1024 * 1024
BIG_ROUNDS = 3
GARBAGE_STREAMS = 150
UNKNOWN_OPENS = 150
MIB = 1024 * 1024


def memory_kib() -> dict[str, int]:
    """VmHWM (peak RSS) and VmRSS of this process, in KiB."""
    values = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0])
    return values


async def read_all(stream, timeout: float) -> tuple[bytes, bool]:
    """Everything the node writes until it ends the stream; (bytes, ended within timeout)."""
    data = bytearray()
    with trio.move_on_after(timeout):
        try:
            while True:
                chunk = await stream.read(65536)
                if not chunk:
                    return bytes(data), True
                data += chunk
        except StreamError:  # StreamEOF / StreamReset: the node ended the stream
            return bytes(data), True
    return bytes(data), False


async def test_slow_and_hostile_peers(figures):
    target = make_node(node_config("target", [py_tool("echo", "echo", ECHO_PARAMS)],
                                   limits={"idle_timeout_seconds": IDLE}))
    counts: Counter[str] = Counter()
    silent_lifetimes: list[float] = []
    big_cuts: list[tuple[int, float]] = []
    good_latencies: list[float] = []
    memory_before = memory_kib()
    rss_peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    async with AsyncExitStack() as stack:
        await stack.enter_async_context(target.running())
        good = make_node(node_config("good", bootstrap=target.addrs[:1]))
        await stack.enter_async_context(good.running())
        await wait_all_know([good], {"echo"})
        addr = target.addrs[0]
        silent_peer = await stack.enter_async_context(raw_host())
        big_peer = await stack.enter_async_context(raw_host())
        garbage_peer = await stack.enter_async_context(raw_host())
        probe_peer = await stack.enter_async_context(raw_host())
        hostile_done = trio.Event()

        async def silent() -> None:
            async def watch(stream, opened: float) -> None:
                ended = await stream_ends(stream, CUT_BOUND)
                lifetime = trio.current_time() - opened
                assert ended, f"a silent stream was still open {CUT_BOUND:g} s after it was opened"
                silent_lifetimes.append(lifetime)

            async with trio.open_nursery() as watchers:
                for _ in range(SILENT_STREAMS):
                    stream = await open_stream(silent_peer, addr, TOOL_PROTOCOL)
                    watchers.start_soon(watch, stream, trio.current_time())

        async def big() -> None:
            chunk = b"x" * (64 * 1024)
            for _ in range(BIG_ROUNDS):
                stream = await open_stream(big_peer, addr, TOOL_PROTOCOL)
                started, sent = trio.current_time(), 0
                with trio.fail_after(30):
                    try:
                        while sent < BIG_BYTES:
                            await stream.write(chunk)
                            sent += len(chunk)
                    except StreamError:  # the node reset the stream: the cut we want
                        counts["big: writes refused after the reset"] += 1
                answer, ended = await read_all(stream, CUT_BOUND)
                assert ended, "an oversized stream was not ended"
                if answer:  # the refusal may be lost to the reset; if it arrived it must say why
                    assert b'"code":-32006' in answer and b"exceeds the limit" in answer, answer[:200]
                    counts["big: too-large error frame received"] += 1
                big_cuts.append((sent, trio.current_time() - started))

        async def garbage() -> None:
            rng = random.Random(5)
            card_opens = 0
            for i in range(GARBAGE_STREAMS):
                protocol = CARD_PROTOCOL if i % 3 == 0 else TOOL_PROTOCOL
                card_opens += protocol == CARD_PROTOCOL
                try:
                    stream = await open_stream(garbage_peer, addr, protocol)
                except StreamFailure:
                    # Past limits.max_card_pushes_per_minute the node resets a peer's card
                    # streams at once, sometimes before the protocol is even agreed.
                    assert protocol == CARD_PROTOCOL and card_opens > target.config.limits.max_card_pushes_per_minute
                    counts["garbage: card stream refused (push limit)"] += 1
                    continue
                junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2048)))
                with trio.fail_after(5):
                    try:
                        await stream.write(junk + (b"\n" if i % 2 else b""))
                    except StreamError:
                        counts["garbage: cut while writing"] += 1
                answer, ended = await read_all(stream, CUT_BOUND)
                assert ended, "a garbage stream was not ended"
                if protocol == TOOL_PROTOCOL and answer:
                    assert b'"isError":true' in answer and b'"error":{"code":' in answer, answer[:200]
                    counts["garbage: error frame received"] += 1
                counts[f"garbage: {protocol} streams ended"] += 1

        async def unknown_protocols() -> None:
            for i in range(UNKNOWN_OPENS):
                with pytest.raises((StreamFailure, MultiselectClientError)):
                    await open_stream(probe_peer, addr, f"/praxis/nope/{i % 7}.0.0")
                counts["unknown protocol opens refused"] += 1

        async def well_behaved() -> None:
            for i in range(5_000):  # bounded; ends as soon as the hostile peers are done
                if hostile_done.is_set():
                    return
                started = trio.current_time()
                routed = await good.call("echo", {"text": f"call {i}"}, timeout=10)
                assert routed.result.text_output() == f"call {i}" and not routed.result.is_error
                good_latencies.append(trio.current_time() - started)

        started = trio.current_time()
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(well_behaved)

                async def hostile() -> None:
                    async with trio.open_nursery() as attackers:
                        for attack in (silent, big, garbage, unknown_protocols):
                            attackers.start_soon(attack)
                    hostile_done.set()

                nursery.start_soon(hostile)
        elapsed = trio.current_time() - started

        # Afterwards: nothing left in flight, and the node still serves.
        routed = await good.call("echo", {"text": "after"}, timeout=10)
        assert routed.result.text_output() == "after"
        assert target.service.in_flight.total_in_flight == 0

    memory_after = memory_kib()
    rss_peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    growth_mib = (memory_after["VmHWM"] - memory_before["VmHWM"]) / 1024
    good_latencies.sort()
    figures(f"hostile peers: {elapsed:.1f} s under attack; well-behaved calls {len(good_latencies)} "
            f"succeeded, 0 failed (median {good_latencies[len(good_latencies) // 2] * 1000:.0f} ms, "
            f"max {good_latencies[-1] * 1000:.0f} ms)")
    figures(f"hostile peers: {len(silent_lifetimes)} silent streams cut after "
            f"{min(silent_lifetimes):.2f}-{max(silent_lifetimes):.2f} s "
            f"(idle timeout {IDLE:g} s, bound {CUT_BOUND:g} s)")
    cuts = ", ".join(f"{sent / MIB:.1f} MiB sent in {secs:.2f} s" for sent, secs in big_cuts)
    figures(f"hostile peers: 10 MiB without newline x{BIG_ROUNDS}: cut after {cuts}")
    figures("hostile peers: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    figures(f"hostile peers: peak RSS (VmHWM) {memory_before['VmHWM'] / 1024:.0f} -> "
            f"{memory_after['VmHWM'] / 1024:.0f} MiB (growth {growth_mib:.0f} MiB); VmRSS "
            f"{memory_before['VmRSS'] / 1024:.0f} -> {memory_after['VmRSS'] / 1024:.0f} MiB; "
            f"ru_maxrss {rss_peak_before / 1024:.0f} -> {rss_peak_after / 1024:.0f} MiB")

    assert len(good_latencies) >= 10, "the well-behaved peer made too few calls to show anything"
    assert len(silent_lifetimes) == SILENT_STREAMS and max(silent_lifetimes) <= CUT_BOUND
    assert all(sent < BIG_BYTES for sent, _ in big_cuts), "a 10 MiB frame was read to the end"
    assert counts["unknown protocol opens refused"] == UNKNOWN_OPENS
    assert growth_mib < 200, f"peak RSS grew by {growth_mib:.0f} MiB"
