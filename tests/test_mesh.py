"""A real mesh of nodes in one trio process, on 127.0.0.1, over Noise + yamux."""

from contextlib import AsyncExitStack

import pytest
import trio

from protocols.errors import NoProvider, PeerUnreachable, ToolNotFound
from tests.helpers import ECHO_PARAMS, py_tool, start_mesh, wait_all_know, wait_until

NUM = [{"name": "a", "type": "number", "required": True}, {"name": "b", "type": "number", "required": True}]


def five_node_tools():
    return [
        [py_tool("echo", "echo", ECHO_PARAMS)],
        [py_tool("add", "add", NUM)],
        [py_tool("noop", "noop")],
        [py_tool("slow", "slow", [{"name": "seconds", "type": "number", "required": True}])],
        [py_tool("echo2", "echo", ECHO_PARAMS)],
    ]


async def test_five_nodes_learn_every_tool_and_call_across():
    async with AsyncExitStack() as stack:
        nodes = await start_mesh(stack, five_node_tools())
        names = {"echo", "add", "noop", "slow", "echo2"}
        await wait_all_know(nodes, names)
        # Peer exchange grew a full mesh from one bootstrap node.
        for node in nodes:
            assert len(node.directory.peers()) == 4
        routed = await nodes[4].call("add", {"a": 2, "b": 40})
        assert routed.provider == nodes[1].peer_id
        assert routed.result.structured_content == {"sum": 42}
        routed = await nodes[1].call("echo2", {"text": "héllo"})
        assert routed.result.text_output() == "héllo" and routed.provider == nodes[4].peer_id
        local = await nodes[0].call("echo", {"text": "x"})
        assert local.provider == "local"


async def test_node_leaving_removes_its_tools_everywhere():
    async with AsyncExitStack() as stack:
        nodes = await start_mesh(stack, five_node_tools()[:2])
        leaving_stack = AsyncExitStack()
        from tests.helpers import make_node, node_config

        leaver = make_node(node_config("leaver", [py_tool("only_here", "noop")], bootstrap=nodes[0].addrs[:1]))
        await leaving_stack.enter_async_context(leaver.running())
        await wait_all_know(nodes, {"only_here"})
        await leaving_stack.aclose()
        for node in nodes:
            await wait_until(lambda n=node: "only_here" not in n.router.tools(), node.directory.changed)
        with trio.fail_after(2):  # fails fast: no provider left, nothing to wait for
            with pytest.raises(ToolNotFound, match="only_here"):
                await nodes[1].call("only_here", {})


async def test_call_goes_to_the_other_provider_when_one_leaves():
    async with AsyncExitStack() as stack:
        nodes = await start_mesh(stack, [[], [py_tool("dup", "echo", ECHO_PARAMS)]])
        from tests.helpers import make_node, node_config

        second = AsyncExitStack()
        other = make_node(node_config("other", [py_tool("dup", "echo", ECHO_PARAMS)], bootstrap=nodes[0].addrs[:1]))
        await second.enter_async_context(other.running())
        caller = nodes[0]
        await wait_until(lambda: len(caller.directory.providers("dup")) == 2, caller.directory.changed)
        await second.aclose()
        await wait_until(lambda: len(caller.directory.providers("dup")) == 1, caller.directory.changed)
        routed = await caller.call("dup", {"text": "still here"})
        assert routed.provider == nodes[1].peer_id
        assert routed.result.text_output() == "still here"


async def test_unreachable_provider_is_skipped_for_the_next():
    """A provider whose connection is gone but whose card is still listed is skipped."""
    async with AsyncExitStack() as stack:
        nodes = await start_mesh(stack, [[], [py_tool("dup", "echo", ECHO_PARAMS)],
                                         [py_tool("dup", "echo", ECHO_PARAMS)]])
        caller = nodes[0]
        await wait_until(lambda: len(caller.directory.providers("dup")) == 2, caller.directory.changed)
        first_choice = caller.directory.providers("dup")[0]
        # Make the first choice unreachable without telling the directory: a stale card.
        victim = next(n for n in nodes if n.peer_id == first_choice)
        for protocol in ("/praxis/tool/1.0.0", "/praxis/tool/1.1.0"):
            victim.host.remove_stream_handler(protocol)
        routed = await caller.call("dup", {"text": "x"})
        assert routed.provider != first_choice
        # Still listed, but now ranked last after the failure.
        assert caller.directory.providers("dup")[-1] == first_choice


async def test_all_providers_unreachable_names_what_was_tried():
    async with AsyncExitStack() as stack:
        nodes = await start_mesh(stack, [[], [py_tool("lonely", "noop")]])
        caller = nodes[0]
        await wait_all_know([caller], {"lonely"})
        for protocol in ("/praxis/tool/1.0.0", "/praxis/tool/1.1.0"):
            nodes[1].host.remove_stream_handler(protocol)
        with pytest.raises(NoProvider) as err:
            await caller.call("lonely", {})
        assert "lonely" in err.value.message and nodes[1].peer_id in err.value.message


async def test_remote_tool_error_comes_back_typed():
    async with AsyncExitStack() as stack:
        nodes = await start_mesh(stack, [[], [py_tool("boom", "fail", [{"name": "message", "type": "string"}])]])
        await wait_all_know(nodes[:1], {"boom"})
        from protocols.errors import ToolExecutionError

        with pytest.raises(ToolExecutionError, match="RuntimeError: kaput"):
            await nodes[0].call("boom", {"message": "kaput"})
        with pytest.raises(ToolExecutionError, match="RuntimeError: default"):
            await nodes[0].call("boom", {"message": "default"})


async def test_deadline_bounds_a_slow_remote_call():
    async with AsyncExitStack() as stack:
        nodes = await start_mesh(stack, [[], [py_tool("slow", "slow", [{"name": "seconds", "type": "number"}])]])
        await wait_all_know(nodes[:1], {"slow"})
        from protocols.errors import ToolTimeout

        with trio.fail_after(5):
            with pytest.raises((ToolTimeout, PeerUnreachable)):
                await nodes[0].call("slow", {"seconds": 30}, timeout=0.5)
        routed = await nodes[0].call("slow", {"seconds": 0}, timeout=5)
        assert routed.result.text_output() == "slept 0s"


async def test_tool_set_change_is_pushed_to_peers():
    from node.config import ToolContract

    async with AsyncExitStack() as stack:
        nodes = await start_mesh(stack, [[], [], [py_tool("first", "noop")]])
        await wait_all_know(nodes, {"first"})
        nodes[2].add_tool(ToolContract(name="added", engine="python",
                                       engine_spec={"callable": "tests.sample_tools:noop"}))
        await wait_all_know(nodes, {"first", "added"})
        nodes[2].remove_tool("first")
        for node in nodes[:2]:
            await wait_until(lambda n=node: "first" not in n.router.tools(), node.directory.changed)
        assert (await nodes[0].call("added", {})).provider == nodes[2].peer_id


async def test_provider_vanishing_mid_call_fails_fast_with_a_clear_error():
    from tests.helpers import make_node, node_config

    async with AsyncExitStack() as stack:
        (caller,) = await start_mesh(stack, [[]])
        provider = make_node(node_config("provider", [py_tool("slow", "slow", [{"name": "seconds", "type": "number"}])],
                                         bootstrap=caller.addrs[:1]))
        stop = trio.Event()
        outcome: list[BaseException] = []

        async def run_provider(task_status=trio.TASK_STATUS_IGNORED) -> None:
            async with provider.running():
                task_status.started()
                await stop.wait()

        async def call_it() -> None:
            try:
                await caller.call("slow", {"seconds": 30}, timeout=30)
            except PeerUnreachable as exc:
                outcome.append(exc)

        with trio.fail_after(10):  # well before the call's 30 s deadline
            async with trio.open_nursery() as nursery:
                await nursery.start(run_provider)
                await wait_all_know([caller], {"slow"})
                nursery.start_soon(call_it)
                while provider.service.in_flight.total_in_flight == 0:  # until the call runs there
                    await trio.sleep(0.01)
                stop.set()  # the provider stops under the running call
        assert len(outcome) == 1
        assert "may have run" in outcome[0].message and provider.peer_id in outcome[0].message


async def test_bootstrap_peer_is_dialled_until_up_and_again_after_restart(tmp_path):
    import socket

    from libp2p.crypto.ed25519 import create_new_key_pair

    from node.app import Node
    from tests.helpers import node_config

    with socket.socket() as s:  # a free port for the bootstrap node's fixed address
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = create_new_key_pair()
    boot_cfg = node_config("boot", [py_tool("boot_tool", "noop")], p2p={"port": port})
    boot_addr = f"/ip4/127.0.0.1/tcp/{port}/p2p/{Node(boot_cfg, key_pair=key).peer_id}"
    async with AsyncExitStack() as stack:
        from tests.helpers import make_node

        waiter = make_node(node_config("waiter", bootstrap=[boot_addr], p2p={"dial_backoff_max_seconds": 0.5}))
        await stack.enter_async_context(waiter.running())
        assert "boot_tool" not in waiter.router.tools()
        for _ in range(2):  # first start, then a restart with the same identity and port
            async with Node(boot_cfg, key_pair=key).running():
                await wait_all_know([waiter], {"boot_tool"}, timeout=10)
            await wait_until(lambda: "boot_tool" not in waiter.router.tools(), waiter.directory.changed)
