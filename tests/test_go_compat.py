"""A client writing frames exactly as the Go node does (docs/architecture.md, "The wire")."""

from contextlib import AsyncExitStack

from tests.helpers import ECHO_PARAMS, py_tool, start_mesh, wait_until
from tests.raw_peer import frame, open_stream, raw_host, read_json


async def test_go_style_card_exchange_and_wrapped_call():
    async with AsyncExitStack() as stack:
        (node,) = await start_mesh(stack, [[py_tool("echo", "echo", ECHO_PARAMS),
                                             py_tool("add", "add", [{"name": "a", "type": "number"},
                                                                    {"name": "b", "type": "number"}])]])
        async with raw_host() as go:
            go_id = go.get_id().to_string()
            # Card: written first, no half-close, then read the node's card up to its newline.
            stream = await open_stream(go, node.addrs[0], "/praxis/card/1.0.0")
            await stream.write(frame({
                "name": "go-agent", "version": "1.0.0", "peerId": go_id, "capabilities": None,
                "tools": [{"name": "go_tool", "description": "from go", "parameters": [
                    {"name": "q", "type": "string", "description": "", "required": True}]}],
                "timestamp": 1700000000,
            }))
            card = await read_json(stream)
            await stream.close()
            assert card["peerId"] == node.peer_id
            assert {t["name"] for t in card["tools"]} == {"echo", "add"}
            echo = next(t for t in card["tools"] if t["name"] == "echo")
            assert echo["parameters"] == [{"name": "text", "type": "string", "description": "", "required": True}]
            await wait_until(lambda: node.directory.get(go_id) is not None, node.directory.changed)
            assert "go_tool" in node.directory.get(go_id).tools
            assert "go_tool" in node.router.tools()

            # Tool call with the Go node's {args, params, secrets} wrapping.
            stream = await open_stream(go, node.addrs[0], "/praxis/tool/1.0.0")
            await stream.write(frame({"id": "go-1", "name": "add", "timestamp": 1700000001,
                                      "arguments": {"args": {"a": 1}, "params": {"b": 2}, "secrets": {}}}))
            response = await read_json(stream)
            assert response["id"] == "go-1"
            assert response["result"]["isError"] is False
            assert response["result"]["content"] == [{"type": "text", "text": '{"sum": 3}'}]
            assert response["result"]["structuredContent"] == {"sum": 3}
            assert "error" not in response


async def test_failure_is_visible_to_a_caller_reading_only_result():
    async with AsyncExitStack() as stack:
        (node,) = await start_mesh(stack, [[py_tool("echo", "echo", ECHO_PARAMS)]])
        async with raw_host() as go:
            stream = await open_stream(go, node.addrs[0], "/praxis/tool/1.0.0")
            await stream.write(frame({"id": "x", "name": "echo", "arguments": {}, "timestamp": 1}))
            response = await read_json(stream)
            assert response["result"]["isError"] is True
            assert "missing required argument 'text'" in response["result"]["content"][0]["text"]
            assert response["error"]["code"] == -32602
