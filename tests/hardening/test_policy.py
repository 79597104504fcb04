"""Who may call what (by authenticated peer ID), and the hop bound on forwarded calls."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

import pytest

from protocols.errors import NotAllowed
from tests.helpers import ECHO_PARAMS, make_node, node_config, py_tool, wait_all_know
from tests.raw_peer import frame, open_stream, raw_host, read_json

SECRET_ARG = "canary-argument-value-7f3a"


async def test_allow_and_deny_lists_by_peer_id(caplog):
    caplog.set_level(logging.INFO)
    async with AsyncExitStack() as stack:
        allowed = make_node(node_config("allowed"))
        denied = make_node(node_config("denied"))
        provider_cfg = node_config("provider", [
            py_tool("open", "echo", ECHO_PARAMS),
            py_tool("only_allowed", "echo", ECHO_PARAMS, allow_peers=[allowed.peer_id]),
            py_tool("deny_one", "echo", ECHO_PARAMS, deny_peers=[denied.peer_id]),
        ])
        provider = make_node(provider_cfg)
        await stack.enter_async_context(provider.running())
        for node in (allowed, denied):
            node.config.p2p.bootstrap_nodes = provider.addrs[:1]
            await stack.enter_async_context(node.running())
        await wait_all_know([allowed, denied], {"open", "only_allowed", "deny_one"})

        assert (await allowed.call("only_allowed", {"text": "a"})).result.text_output() == "a"
        assert (await allowed.call("deny_one", {"text": "b"})).result.text_output() == "b"
        assert (await denied.call("open", {"text": "c"})).result.text_output() == "c"
        for tool in ("only_allowed", "deny_one"):
            with pytest.raises(NotAllowed, match=f"not allowed to call tool '{tool}'"):
                await denied.call(tool, {"text": SECRET_ARG})
    refusals = [r.getMessage() for r in caplog.records if "not allowed" in r.getMessage()]
    assert refusals and all(denied.peer_id in m for m in refusals)
    assert SECRET_ARG not in caplog.text


async def test_process_tools_are_closed_to_peers_unless_named(tmp_path):
    echo_proc = {"engine": "process", "params": ECHO_PARAMS,
                 "engineSpec": {"command": ["sh", "-c", 'printf %s "$text"']}}
    async with AsyncExitStack() as stack:
        caller = make_node(node_config("caller"))
        provider = make_node(node_config("provider", [
            {"name": "proc_closed", **echo_proc},
            {"name": "proc_open", **echo_proc, "allow_peers": [caller.peer_id]},
        ], engines={"process": {"enabled": True}}, policy={"default_allow": ["*"]}))
        await stack.enter_async_context(provider.running())
        caller.config.p2p.bootstrap_nodes = provider.addrs[:1]
        await stack.enter_async_context(caller.running())
        await wait_all_know([caller], {"proc_closed", "proc_open"})
        with pytest.raises(NotAllowed):
            await caller.call("proc_closed", {"text": "x"})
        assert (await caller.call("proc_open", {"text": "y"})).result.text_output() == "y"
        # The operator's own node may still run it locally.
        assert (await provider.call("proc_closed", {"text": "z"})).result.text_output() == "z"


async def test_node_default_policy_can_close_everything():
    async with AsyncExitStack() as stack:
        provider = make_node(node_config("provider", [py_tool("echo", "echo", ECHO_PARAMS)],
                                         policy={"default_allow": []}))
        await stack.enter_async_context(provider.running())
        caller = make_node(node_config("caller", bootstrap=provider.addrs[:1]))
        await stack.enter_async_context(caller.running())
        await wait_all_know([caller], {"echo"})
        with pytest.raises(NotAllowed):
            await caller.call("echo", {"text": "x"})


async def test_hop_count_bounds_forwarding():
    async with AsyncExitStack() as stack:
        node = make_node(node_config("n", [py_tool("echo", "echo", ECHO_PARAMS)], limits={"max_hops": 3}))
        await stack.enter_async_context(node.running())
        async with raw_host() as peer:
            stream = await open_stream(peer, node.addrs[0], "/praxis/tool/1.0.0")
            await stream.write(frame({"id": "h", "name": "echo", "arguments": {"text": "x"}, "hops": 4}))
            response = await read_json(stream)
            assert response["error"]["code"] == -32006
            assert "forwarded 4 times (limit 3)" in response["error"]["message"]
            stream = await open_stream(peer, node.addrs[0], "/praxis/tool/1.0.0")
            await stream.write(frame({"id": "h2", "name": "elsewhere", "arguments": {}, "hops": 3}))
            response = await read_json(stream)
            assert "may not be forwarded further" in response["error"]["message"]


async def test_tool_output_in_errors_reaches_the_caller_but_not_the_log(caplog):
    caplog.set_level(logging.INFO)
    async with AsyncExitStack() as stack:
        boom = py_tool("boom", "fail", [{"name": "message", "type": "string"}])
        provider = make_node(node_config("provider", [boom]))
        await stack.enter_async_context(provider.running())
        caller = make_node(node_config("caller", bootstrap=provider.addrs[:1]))
        await stack.enter_async_context(caller.running())
        await wait_all_know([caller], {"boom"})
        from protocols.errors import ToolExecutionError

        with pytest.raises(ToolExecutionError, match=SECRET_ARG):  # the caller sees the tool's message
            await caller.call("boom", {"message": SECRET_ARG})
    assert "boom" in caplog.text and "the tool failed" in caplog.text
    assert SECRET_ARG not in caplog.text
