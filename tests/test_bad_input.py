"""Hostile and broken input: each gets a clear error and the node goes on serving."""

from contextlib import AsyncExitStack

import trio
from libp2p.network.stream.exceptions import StreamError
from libp2p.stream_muxer.exceptions import MuxedStreamError

from tests.helpers import ECHO_PARAMS, make_node, node_config, py_tool, running
from tests.raw_peer import frame, open_stream, raw_host, read_json, stream_ends

TOOL = "/praxis/tool/1.0.0"
CARD = "/praxis/card/1.0.0"


def strict_node():
    return make_node(node_config(
        "strict",
        [py_tool("echo", "echo", ECHO_PARAMS),
         py_tool("slow", "slow", [{"name": "seconds", "type": "number", "required": True}])],
        limits={"max_frame_bytes": 64 * 1024, "idle_timeout_seconds": 0.5},
    ))


async def still_serves(go, node) -> None:
    stream = await open_stream(go, node.addrs[0], TOOL)
    await stream.write(frame({"id": "ok", "name": "echo", "arguments": {"text": "alive"}}))
    response = await read_json(stream)
    assert response["result"]["content"][0]["text"] == "alive"


async def request(go, node, payload: bytes):
    stream = await open_stream(go, node.addrs[0], TOOL)
    await stream.write(payload)
    return await read_json(stream)


async def test_unknown_tool_and_bad_arguments():
    node = strict_node()
    async with running(node), raw_host() as go:
        resp = await request(go, node, frame({"id": "1", "name": "nope", "arguments": {}}))
        assert resp["error"]["code"] == -32601 and "nope" in resp["error"]["message"]
        resp = await request(go, node, frame({"id": "2", "name": "echo", "arguments": {"text": 5}}))
        assert resp["error"]["code"] == -32602
        assert "argument 'text' must be string, got number" in resp["error"]["message"]
        resp = await request(go, node, frame({"id": "3", "name": "echo", "arguments": {"text": "a", "zz": 1}}))
        assert "unknown argument 'zz'" in resp["error"]["message"]
        await still_serves(go, node)


async def test_not_json_and_wrong_shapes():
    node = strict_node()
    async with running(node), raw_host() as go:
        resp = await request(go, node, b"this is not json\n")
        assert resp["error"]["code"] == -32600 and "not valid JSON" in resp["error"]["message"]
        resp = await request(go, node, b"\xff\xfe\n")
        assert "UTF-8" in resp["error"]["message"]
        resp = await request(go, node, frame([1, 2, 3]))
        assert "must be a JSON object" in resp["error"]["message"]
        resp = await request(go, node, frame({"id": "9", "arguments": {}}))
        assert resp["id"] == "9" and "name: Field required" in resp["error"]["message"]
        await still_serves(go, node)


async def test_frame_over_the_limit_is_refused_and_cut():
    node = strict_node()
    async with running(node), raw_host() as go:
        stream = await open_stream(go, node.addrs[0], TOOL)
        await stream.write(b"x" * (100 * 1024))  # no newline, past the 64 KiB limit
        resp = await read_json(stream)
        assert resp["error"]["code"] == -32006 and "65536 bytes" in resp["error"]["message"]
        assert await stream_ends(stream, 3)
        await still_serves(go, node)


async def test_silent_stream_is_cut_after_the_idle_timeout():
    node = strict_node()
    async with running(node), raw_host() as go:
        stream = await open_stream(go, node.addrs[0], TOOL)
        assert await stream_ends(stream, 3)  # node idle timeout is 0.5 s
        await still_serves(go, node)


async def test_caller_vanishing_mid_call_leaves_the_node_serving():
    node = strict_node()
    async with running(node):
        async with raw_host() as go:
            stream = await open_stream(go, node.addrs[0], TOOL)
            await stream.write(frame({"id": "s", "name": "slow", "arguments": {"seconds": 0.3}}))
        # the raw host is gone (connection closed) while the tool runs
        async with raw_host() as go2:
            await still_serves(go2, node)


async def test_card_that_lies_about_its_peer_id_is_refused():
    async with AsyncExitStack() as stack:
        node = strict_node()
        await stack.enter_async_context(node.running())
        other = make_node(node_config("other"))
        await stack.enter_async_context(other.running())
        async with raw_host() as liar:
            stream = await open_stream(liar, node.addrs[0], CARD)
            await stream.write(frame({"name": "liar", "peerId": other.peer_id, "tools": [
                {"name": "evil", "description": "", "parameters": []}]}))
            assert await stream_ends(stream, 3)
            assert node.directory.get(other.peer_id) is None
            assert "evil" not in node.router.tools()
            await still_serves(liar, node)


async def test_every_call_has_a_deadline():
    node = strict_node()
    async with running(node), raw_host() as go:
        stream = await open_stream(go, node.addrs[0], TOOL)
        await stream.write(frame({"id": "d", "name": "slow", "arguments": {"seconds": 30}, "deadline_ms": 300}))
        with trio.fail_after(5):
            resp = await read_json(stream)
        assert resp["error"]["code"] == -32001 and "deadline" in resp["error"]["message"]


async def test_a_request_dripped_slowly_is_cut_at_the_idle_time():
    node = strict_node()  # idle timeout 0.5 s
    async with running(node), raw_host() as go:
        stream = await open_stream(go, node.addrs[0], TOOL)
        started = trio.current_time()
        ended = False
        with trio.move_on_after(5):
            for byte in frame({"id": "d", "name": "echo", "arguments": {"text": "x"}}):
                try:
                    await stream.write(bytes([byte]))  # one byte every 0.2 s: never idle for 0.5 s
                except (StreamError, MuxedStreamError):  # the node cut the stream
                    ended = True
                    break
                await trio.sleep(0.2)  # the attacker's pace, not a synchronisation
        assert ended or await stream_ends(stream, 1)
        assert trio.current_time() - started < 3
        await still_serves(go, node)
