"""Hostile peers on `/praxis/tool/1.1.0`: idle and dripping streams are closed after the idle
time, streams per peer stay bounded, answers to no question and floods of frames are refused,
a caller that never reads cannot stall the provider, a hostile provider cannot hold a caller;
a good peer is served meanwhile, and the node carries on."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
from libp2p.abc import INetStream

from protocols.call import CALL_PROTOCOL, MAX_STRAY_FRAMES
from protocols.errors import InvalidRequest
from tests.call_doubles import ECHO, FLOOD, HANG, RecordingEvents, TalkingEngine, start_node
from tests.hardening.test_connections import swarm_of, until
from tests.helpers import wait_all_know
from tests.raw_peer import frame, open_stream, raw_host, read_json, stream_ends

IDLE = 1.0  # the node's idle timeout in these tests
CUT_BOUND = IDLE + 4.0  # how long a stream may outlive its idle time on a busy machine


async def good_peer_is_served(good, rounds: int = 3) -> None:  # type: ignore[no-untyped-def]
    for i in range(rounds):
        routed = await good.call("echo", {"text": f"good {i}"}, timeout=10)
        assert routed.result.text_output() == f"good {i}"


async def test_idle_and_dripping_call_streams_are_closed_after_the_idle_time() -> None:
    async with AsyncExitStack() as stack:
        node = await start_node(stack, "target", [ECHO], limits={"idle_timeout_seconds": IDLE})
        good = await start_node(stack, "good", bootstrap=node.addrs[:1])
        await wait_all_know([good], {"echo"})
        peer = await stack.enter_async_context(raw_host())
        silent = [await open_stream(peer, node.addrs[0], CALL_PROTOCOL) for _ in range(20)]
        dripping = await open_stream(peer, node.addrs[0], CALL_PROTOCOL)
        await dripping.write(b'{"type":"call","id":"d","na')  # never finished
        after_a_call = await open_stream(peer, node.addrs[0], CALL_PROTOCOL)
        await after_a_call.write(frame({"type": "call", "id": "1", "name": "echo", "arguments": {"text": "a"}}))
        assert (await read_json(after_a_call))["keepMs"] == int(IDLE * 1000)
        t0 = trio.current_time()
        await good_peer_is_served(good)
        ended: list[float] = []

        async def watch(stream: INetStream) -> None:
            assert await stream_ends(stream, CUT_BOUND), "a call stream outlived the idle time"
            ended.append(trio.current_time() - t0)

        async with trio.open_nursery() as nursery:
            for stream in [*silent, dripping, after_a_call]:
                nursery.start_soon(watch, stream)
        assert len(ended) == 22
        print(f"\n22 idle call streams closed, the last {max(ended):.2f} s after the idle time began "
              f"(idle timeout {IDLE:g} s)")


async def test_call_streams_per_peer_are_bounded() -> None:
    per_peer = 8
    async with AsyncExitStack() as stack:
        node = await start_node(stack, "target", [ECHO], limits={"max_streams_per_peer": per_peer,
                                                                "idle_timeout_seconds": 60})
        good = await start_node(stack, "good", bootstrap=node.addrs[:1])
        await wait_all_know([good], {"echo"})
        peer = await stack.enter_async_context(raw_host())
        held: list[INetStream] = []
        refused = 0
        for _ in range(per_peer + 4):
            try:
                held.append(await open_stream(peer, node.addrs[0], CALL_PROTOCOL))
            except Exception:  # reset during negotiation: the limit refused it
                refused += 1
        assert len(held) <= per_peer and refused >= 4, (len(held), refused)
        await good_peer_is_served(good)
        # The good peer's calls used one pooled stream (at most half the limit is ever pooled).
        assert good.links.calls.opened == 1


async def test_answers_to_no_question_and_floods_of_frames_are_refused() -> None:
    engine = TalkingEngine()
    async with AsyncExitStack() as stack:
        node = await start_node(stack, "target", [ECHO, HANG], engine)
        good = await start_node(stack, "good", bootstrap=node.addrs[:1])
        await wait_all_know([good], {"echo"})
        peer = await stack.enter_async_context(raw_host())

        # During a call: answers to questions never asked. The stream is reset and the call stopped.
        stream = await open_stream(peer, node.addrs[0], CALL_PROTOCOL)
        await stream.write(frame({"type": "call", "id": "h", "name": "hang", "arguments": {}}))
        with trio.fail_after(10):
            await engine.started.wait()
        for ask in range(MAX_STRAY_FRAMES):
            await stream.write(frame({"type": "answer", "ask": 1000 + ask, "result": {"x": 1}}))
        assert await stream_ends(stream, 5)
        with trio.fail_after(5):
            await engine.cancelled.wait()

        # Between calls: a flood of frames that answer nothing, garbage included.
        stream = await open_stream(peer, node.addrs[0], CALL_PROTOCOL)
        flood = b"".join(frame({"type": kind}) for kind in ("cancel", "answer", "progress", "nope") * 250)
        try:
            await stream.write(flood + b"{not json\n" * 1000)
        except Exception:  # the node may reset the stream before the flood is written: the cut we want
            pass
        assert await stream_ends(stream, 5)
        await good_peer_is_served(good)
        assert engine.runs == 1 + 3  # the hang call, and the good peer's calls


async def test_a_caller_that_never_reads_cannot_stall_the_provider() -> None:
    engine = TalkingEngine()
    async with AsyncExitStack() as stack:
        node = await start_node(stack, "target", [ECHO, FLOOD], engine, limits={"idle_timeout_seconds": IDLE})
        good = await start_node(stack, "good", bootstrap=node.addrs[:1])
        await wait_all_know([good], {"echo"})
        peer = await stack.enter_async_context(raw_host())
        stream = await open_stream(peer, node.addrs[0], CALL_PROTOCOL)
        # 100,000 progress updates and 2,000 log lines of 60 KB (120 MB), to a caller that never reads.
        await stream.write(frame({"type": "call", "id": "f", "name": "flood", "logLevel": "debug",
                                  "arguments": {"progress": 100_000, "logs": 2_000, "log_bytes": 60_000}}))
        t0 = trio.current_time()
        with trio.fail_after(20):
            await engine.finished.wait()  # the engine never waited on the caller
        ran = trio.current_time() - t0
        await good_peer_is_served(good)
        recent = [c for c in node.stats.recent_calls() if c.tool == "flood"]
        assert recent and recent[0].outcome == "ok"  # answered, as far as the provider is concerned
        # The provider gives the stream up within the idle time of the first frame not taken.
        peer_id = peer.get_id()

        def streams_on_node() -> int:
            return sum(len(c.get_streams()) for c in swarm_of(node.host).get_connections(peer_id))

        await until(lambda: streams_on_node() == 0, timeout=CUT_BOUND, what="the unread stream given up")
        print(f"\nflood of 100,000 progress and 2,000 x 60 KB logs to a caller that never reads: engine done in "
              f"{ran:.2f} s, call released {trio.current_time() - t0:.2f} s after it started")


async def test_a_hostile_provider_cannot_flood_the_caller() -> None:
    """A raw 1.1.0 provider answering a call with endless frames of no known type, then one
    asking too many questions at once: the caller fails that call and serves on."""
    async with AsyncExitStack() as stack:
        evil = await stack.enter_async_context(raw_host())

        async def endless(stream: INetStream) -> None:
            request = json.loads((await stream.read(65536)).split(b"\n")[0])
            try:
                if request["name"] == "junk":
                    for _ in range(10_000):
                        await stream.write(frame({"type": "junk"}))
                else:
                    for ask in range(1, 20):
                        await stream.write(frame({"type": "ask", "ask": ask, "method": "elicitation/create",
                                                  "params": {}}))
                await trio.sleep_forever()
            except Exception:  # the caller reset the stream: what this test wants
                return

        evil.set_stream_handler(CALL_PROTOCOL, endless)  # type: ignore[arg-type]
        node = await start_node(stack, "caller", [ECHO])
        addr = f"{evil.get_addrs()[0]}/p2p/{evil.get_id().to_string()}"
        from node.mesh.host import parse_peer_addr

        with trio.fail_after(10):
            await node.host.connect(parse_peer_addr(addr))
        for name, reason in (("junk", "frames of unknown type"), ("asks", "questions at once")):
            with trio.fail_after(10), pytest.raises(InvalidRequest) as info:
                await node.links.call_peer(evil.get_id().to_string(), _request(name), trio.current_time() + 10,
                                           SlowToAnswer())
            assert reason in info.value.message
        assert node.links.calls.idle_streams() == 0
        assert (await node.call("echo", {"text": "still here"})).result.text_output() == "still here"


class SlowToAnswer(RecordingEvents):
    """A caller that takes its time over every question (so they pile up)."""

    async def ask(self, method: str, params: dict[str, Any], deadline: float) -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


def _request(name: str):  # type: ignore[no-untyped-def]
    from protocols.messages import ToolRequest

    return ToolRequest(id=f"id-{name}", name=name, arguments={})
