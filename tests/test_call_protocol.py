"""`/praxis/tool/1.1.0` between real nodes on 127.0.0.1: interim frames both ways across one and
two hops, several calls on one stream, cancellation reaching the engine, a vanished caller,
and peers that know only 1.0.0."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from typing import get_args

import pytest
import trio
import trio.testing

from node.config.errors import ConfigError
from node.mesh.host import parse_peer_addr
from protocols.call import CALL_PROTOCOL
from protocols.call_events import ASK_METHODS, LOG_LEVELS, SAMPLING, AskRefused
from protocols.call_messages import AskMethod, LogLevel
from protocols.errors import PeerUnreachable
from protocols.tool import TOOL_PROTOCOL
from tests.call_doubles import CHATTY, ECHO, HANG, RecordingEvents, TalkingEngine, start_chain, start_node
from tests.hardening.attacker import attacker
from tests.helpers import make_node, node_config, wait_all_know, wait_until
from tests.raw_peer import frame, open_stream, raw_host, read_json

ANSWER = {"content": {"text": "42", "type": "text"}, "model": "test-double", "role": "assistant"}


def check_conversation(events: RecordingEvents, steps: int) -> None:
    assert [(p.progress, p.total, p.message) for p in events.progress_seen] == [
        (float(i), float(steps), f"step {i}") for i in range(1, steps + 1)]
    # The debug line is below the caller's level ("info"): never sent.
    assert [(m.level, m.data, m.logger) for m in events.logs] == [("warning", {"note": "careful"}, "engine")]
    assert [method for method, _ in events.asked] == [SAMPLING]
    assert events.asked[0][1]["messages"][0]["content"]["text"] == "what is six times seven?"


async def test_progress_log_and_a_question_cross_one_hop_in_order() -> None:
    engine = TalkingEngine()
    async with AsyncExitStack() as stack:
        b = await start_node(stack, "b", [CHATTY], engine)
        a = await start_node(stack, "a", bootstrap=b.addrs[:1])
        await wait_all_know([a], {"chatty"})
        events = RecordingEvents()
        routed = await a.router.call("chatty", {"steps": 20}, deadline=trio.current_time() + 20, events=events)
        assert routed.provider == b.peer_id
        # The answer travelled back to the engine that asked, which returned it.
        assert json.loads(routed.result.text_output()) == ANSWER
        check_conversation(events, 20)


async def test_progress_log_and_a_question_cross_two_hops_in_order() -> None:
    engine = TalkingEngine()
    async with AsyncExitStack() as stack:
        a, b, c = await start_chain(stack, [CHATTY], engine)
        events = RecordingEvents()
        # Sent to b, which forwards it to c: every interim frame crosses both hops.
        response = await a.router.request(b.peer_id, "chatty", {"steps": 30}, trio.current_time() + 20, events)
        assert response.error is None
        assert json.loads(response.result.text_output()) == ANSWER
        check_conversation(events, 30)
        assert engine.runs == 1


async def test_a_refused_question_reaches_the_engine_as_the_callers_error() -> None:
    engine = TalkingEngine()
    async with AsyncExitStack() as stack:
        b = await start_node(stack, "b", [CHATTY], engine)
        a = await start_node(stack, "a", bootstrap=b.addrs[:1])
        await wait_all_know([a], {"chatty"})
        events = RecordingEvents(refuse=AskRefused(-32600, "Sampling not supported"))
        response = await a.router.request(b.peer_id, "chatty", {"steps": 1}, trio.current_time() + 20, events)
        # The engine was told exactly what the caller answered.
        assert response.result.is_error
        assert response.result.text_output() == "refused -32600: Sampling not supported"


async def test_sequential_calls_reuse_one_stream() -> None:
    async with AsyncExitStack() as stack:
        b = await start_node(stack, "b", [ECHO])
        a = await start_node(stack, "a", bootstrap=b.addrs[:1])
        await wait_all_know([a], {"echo"})
        for i in range(10):
            routed = await a.call("echo", {"text": f"call {i}"})
            assert routed.result.text_output() == f"call {i}"
        assert a.links.calls.opened == 1
        assert a.links.calls.idle_streams() == 1
        # Three at once need three streams; afterwards they all wait in the pool.
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(a.call, "echo", {"text": "x"})
        assert a.links.calls.opened == 3
        assert a.links.calls.idle_streams() == 3


async def test_an_idle_pooled_stream_is_closed_and_the_next_call_opens_a_fresh_one() -> None:
    async with AsyncExitStack() as stack:
        b = await start_node(stack, "b", [ECHO], limits={"idle_timeout_seconds": 0.5})
        a = await start_node(stack, "a", bootstrap=b.addrs[:1])
        await wait_all_know([a], {"echo"})
        await a.call("echo", {"text": "one"})
        assert a.links.calls.idle_streams() == 1
        # b keeps it 0.5 s, a half of that: the pool's reaper closes it.
        await wait_until(lambda: not a.links.calls.idle_streams(), a.links.calls.changed, timeout=5)
        assert (await a.call("echo", {"text": "two"})).result.text_output() == "two"
        assert a.links.calls.opened == 2


async def test_a_stream_broken_while_idle_is_no_error_of_the_next_call() -> None:
    async with AsyncExitStack() as stack:
        b = await start_node(stack, "b", [ECHO])
        a = await start_node(stack, "a", bootstrap=b.addrs[:1])
        await wait_all_know([a], {"echo"})
        await a.call("echo", {"text": "one"})
        (idle,) = a.links.calls.idle[b.peer_id]
        await idle.stream.reset()  # broken between calls
        assert (await a.call("echo", {"text": "two"})).result.text_output() == "two"
        assert a.links.calls.opened == 2


async def test_cancelling_the_caller_stops_the_engine_one_hop_away() -> None:
    engine = TalkingEngine()
    async with AsyncExitStack() as stack:
        b = await start_node(stack, "b", [HANG], engine)
        a = await start_node(stack, "a", bootstrap=b.addrs[:1])
        await wait_all_know([a], {"hang"})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.call, "hang", {})
            with trio.fail_after(10):
                await engine.started.wait()
            t0 = trio.current_time()
            nursery.cancel_scope.cancel()
        with trio.fail_after(5):
            await engine.cancelled.wait()
        print(f"\ncancel reached the engine one hop away in {(trio.current_time() - t0) * 1000:.1f} ms")
        await trio.testing.wait_all_tasks_blocked()  # the service records the call as it unwinds
        recent = b.stats.recent_calls()
        assert recent[0].tool == "hang" and recent[0].outcome == "cancelled"


async def test_cancelling_the_caller_stops_the_engine_two_hops_away() -> None:
    engine = TalkingEngine()
    async with AsyncExitStack() as stack:
        a, b, c = await start_chain(stack, [HANG], engine)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.router.request, b.peer_id, "hang", {}, trio.current_time() + 30)
            with trio.fail_after(10):
                await engine.started.wait()
            t0 = trio.current_time()
            nursery.cancel_scope.cancel()
        with trio.fail_after(5):
            await engine.cancelled.wait()
        print(f"\ncancel reached the engine two hops away in {(trio.current_time() - t0) * 1000:.1f} ms")
        await trio.testing.wait_all_tasks_blocked()
        assert engine.runs == 1  # nothing was retried after the cancel
        assert c.stats.recent_calls()[0].outcome == "cancelled"


async def test_a_caller_that_still_listens_gets_cancelled() -> None:
    """A cancel frame on a raw 1.1.0 stream: the engine stops, the result says -32009."""
    engine = TalkingEngine()
    async with AsyncExitStack() as stack:
        b = await start_node(stack, "b", [HANG, ECHO], engine)
        async with raw_host() as peer:
            stream = await open_stream(peer, b.addrs[0], CALL_PROTOCOL)
            await stream.write(frame({"type": "call", "id": "c-1", "name": "hang", "arguments": {}}))
            with trio.fail_after(10):
                await engine.started.wait()
            await stream.write(frame({"type": "cancel"}))
            result = await read_json(stream)
            assert result["type"] == "result" and result["id"] == "c-1"
            assert result["error"]["code"] == -32009
            assert engine.cancelled.is_set()
            # The stream carries the next call.
            await stream.write(frame({"type": "call", "id": "c-2", "name": "echo", "arguments": {"text": "on"},
                                      "events": False}))
            result = await read_json(stream)
            assert result["id"] == "c-2" and result["result"]["content"][0]["text"] == "on"
            assert result["keepMs"] == 10_000


async def test_a_caller_that_vanishes_cancels_the_providers_run() -> None:
    engine = TalkingEngine()
    async with AsyncExitStack() as stack:
        b = await start_node(stack, "b", [HANG], engine)
        a = make_node(node_config("a", bootstrap=b.addrs[:1]))
        stop = trio.Event()
        failures: list[BaseException] = []

        async def run_a(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with a.running():
                task_status.started()
                await stop.wait()

        async def call() -> None:
            with pytest.raises(PeerUnreachable) as info:
                await a.call("hang", {}, timeout=30)
            failures.append(info.value)

        async with trio.open_nursery() as nursery:
            await nursery.start(run_a)
            await wait_all_know([a], {"hang"})
            nursery.start_soon(call)
            with trio.fail_after(10):
                await engine.started.wait()
            stop.set()  # node a stops: its connections close under the call
            with trio.fail_after(5):
                await engine.cancelled.wait()
        assert len(failures) == 1


async def test_a_peer_that_knows_only_1_0_0_is_called_and_calls() -> None:
    """The attacker double serves only /praxis/tool/1.0.0 (as the Go node does); a raw client
    that offers only 1.0.0 calls the node."""
    spec = {"name": "legacy", "description": "", "parameters": []}
    async with AsyncExitStack() as stack:
        node = await start_node(stack, "a", [ECHO])
        async with attacker([spec]) as old:
            with trio.fail_after(10):
                await old.host.connect(parse_peer_addr(node.addrs[0]))
            await wait_until(lambda: node.directory.get(old.peer_id) is not None, node.directory.changed)
            routed = await node.call("legacy", {})
            assert routed.result.text_output() == "from the attacker"
            assert old.tool_calls[0]["name"] == "legacy" and "type" not in old.tool_calls[0]
            # Each call on 1.0.0 is its own stream; nothing waits in the pool.
            await node.call("legacy", {})
            assert node.links.calls.opened == 2 and node.links.calls.idle_streams() == 0
            stream = await open_stream(old.host, node.addrs[0], TOOL_PROTOCOL)
            await stream.write(frame({"id": "go-1", "name": "echo", "arguments": {"text": "hi"}, "timestamp": 1}))
            response = await read_json(stream)
            assert response == {"id": "go-1", "result": {"content": [{"type": "text", "text": "hi"}],
                                                          "isError": False}}


async def test_a_reset_cancels_a_call_on_1_0_0() -> None:
    """The only way a 1.0.0 caller (the Go node) can give up: reset the stream."""
    engine = TalkingEngine()
    async with AsyncExitStack() as stack:
        b = await start_node(stack, "b", [HANG], engine)
        peer = await stack.enter_async_context(raw_host())
        stream = await open_stream(peer, b.addrs[0], TOOL_PROTOCOL)
        await stream.write(frame({"id": "go-1", "name": "hang", "arguments": {}, "timestamp": 1}))
        with trio.fail_after(10):
            await engine.started.wait()
        await stream.reset()
        with trio.fail_after(5):
            await engine.cancelled.wait()


def test_frame_models_know_every_log_level_and_question() -> None:
    assert set(get_args(LogLevel)) == set(LOG_LEVELS)
    assert set(get_args(AskMethod)) == ASK_METHODS


def test_call_stream_limits_are_checked_at_load() -> None:
    with pytest.raises(ConfigError, match="max_idle_streams_per_peer: at most half of max_streams_per_peer"):
        node_config("n", limits={"max_idle_streams_per_peer": 200})
    with pytest.raises(ConfigError, match="max_calls_per_stream"):
        node_config("n", limits={"max_calls_per_stream": 0})
    # Not set: the pool takes what the stream limit leaves (min(32, half of it)).
    assert node_config("n", limits={"max_streams_per_peer": 8}).limits.max_idle_streams_per_peer == 32
