"""Finding 2 of issue 8: a node accepts connections for as long as it runs, and bounds what is
open at once (connections in total, per remote IP, per peer; streams per peer) while a good
peer is still served. Everything runs over loopback; every wait has a deadline.

py-libp2p 0.8.1 kept each inbound connection's limiter slot until the node stopped (see
node/mesh/libp2p_patches.py): after about 250 inbound connections in its life, one at a time, a
node refused every new peer. The first two tests are that workaround's own test and its
control; the next two are the finding as reported, against a real Node with its default
limits and against a `praxis-node run` process called through `praxis-node call --peer`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import multiaddr
import pytest
import trio
from libp2p.abc import IHost, INetStream
from libp2p.network.config import ConnectionConfig
from libp2p.network.swarm import Swarm
from libp2p.rcmgr import Direction

from node.config import LimitsSection
from node.mesh.connection_limits import connection_config
from node.mesh.host import full_addrs, parse_peer_addr
from node.mesh.libp2p_patches import release_inbound_slot_on_close
from protocols.tool import TOOL_PROTOCOL
from tests.helpers import ECHO_PARAMS, make_node, node_config, py_tool, wait_all_know
from tests.processes import CLI, ROOT, node_process, write_config
from tests.raw_peer import bare_host, call_tool, connect_from, open_stream, raw_host, read_line, stream_ends

ECHO = [py_tool("echo", "echo", ECHO_PARAMS)]
LINE_PROTOCOL = "/test/line/1.0.0"
LIBP2P_DEFAULT_INBOUND_SLOTS = 250  # ConnectionConfig() defaults: max_connections 300 - min_connections 50
ROUNDS = 300  # sequential connections against a real node: more than py-libp2p's 250 slots
CHURN_PEERS = 10  # raw peers taking turns (see churn())
LOG = "praxis.connections"


# ----- helpers -------------------------------------------------------------------------


def swarm_of(host: IHost) -> Swarm:
    swarm = host.get_network()
    assert isinstance(swarm, Swarm)
    return swarm


@asynccontextmanager
async def line_server(host: IHost) -> AsyncIterator[str]:
    """Run `host` on 127.0.0.1 answering each line on LINE_PROTOCOL with the same line."""
    async def answer(stream: INetStream) -> None:
        try:
            await stream.write(await read_line(stream) + b"\n")
        finally:
            await stream.close()

    host.set_stream_handler(LINE_PROTOCOL, answer)  # type: ignore[arg-type]
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        yield full_addrs(host)[0]


async def echo_line(peer: IHost, addr: str, i: int) -> None:
    stream = await open_stream(peer, addr, LINE_PROTOCOL)
    try:
        await stream.write(f"round {i}\n".encode())
        assert await read_line(stream) == f"round {i}".encode()
    finally:
        await stream.close()


async def echo_tool(peer: IHost, addr: str, i: int) -> None:
    answer = await call_tool(peer, addr, "echo", {"text": f"round {i}"}, request_id=f"r{i}")
    assert answer["result"]["content"] == [{"type": "text", "text": f"round {i}"}], answer


async def churn(peers: list[IHost], addr: str, rounds: int, serve: Callable[[IHost, str, int], Awaitable[None]]
                ) -> None:
    """`rounds` connections to `addr`, one at a time: a peer connects, is served once (`serve`),
    closes its socket, and only then does the next round connect. py-libp2p spends another
    200 ms tidying up a closed connection (two sleeps of 0.1 s), so the peers take turns and
    each is reused once its previous disconnect has returned: ~30 ms a round instead of 250."""
    node_id = parse_peer_addr(addr).peer_id
    idle = [trio.Event() for _ in peers]
    for event in idle:
        event.set()

    async def disconnect(peer: IHost, done: trio.Event) -> None:
        with trio.fail_after(5):
            await peer.disconnect(node_id)
        done.set()

    failure: AssertionError | None = None
    async with trio.open_nursery() as nursery:
        for i in range(rounds):
            k = i % len(peers)
            with trio.fail_after(5):
                await idle[k].wait()
            idle[k] = done = trio.Event()
            try:
                await serve(peers[k], addr, i)
            except Exception as exc:
                failure = AssertionError(f"connection {i + 1} of {rounds} (one at a time) was not served: {exc!r}")
                break
            conns = peers[k].get_network().get_connections(node_id)
            nursery.start_soon(disconnect, peers[k], done)
            with trio.fail_after(5):
                for conn in conns:  # our socket is closed
                    await conn.muxed_conn.event_closed.wait()  # type: ignore[attr-defined]
    if failure is not None:
        raise failure


async def until(cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Wait for a state that py-libp2p signals with no event (connection and stream tables)."""
    with trio.move_on_after(timeout):
        while not cond():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"{what}: still not true after {timeout:g} s")


async def refused(peer: IHost, addr: str) -> bool:
    """True when `peer` cannot connect to `addr` (the node closes the connection before the handshake)."""
    try:
        with trio.fail_after(10):
            await peer.connect(parse_peer_addr(addr))
    except trio.TooSlowError:
        raise
    except Exception:  # SwarmDialAllFailedError and friends: refused
        return True
    return False


def inbound_connections(host: IHost) -> int:
    return sum(1 for conn in swarm_of(host).get_connections() if getattr(conn, "direction", None) == Direction.INBOUND)


def library_stream_slots(host: IHost) -> tuple[int, int]:
    """(free slots of py-libp2p's global stream semaphore, streams its resource manager counts)."""
    swarm = swarm_of(host)
    assert swarm._stream_semaphore is not None and swarm._resource_manager is not None
    return swarm._stream_semaphore.value, swarm._resource_manager._current_streams


def refusals(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOG and r.levelno == logging.INFO
            and text in r.getMessage()]


# ----- the workaround (node/mesh/libp2p_patches.py) ----------------------------------------------

SMALL = LimitsSection(max_connections=5)  # py-libp2p's inbound limiter: 5 - 5 // 4 = 4 slots


async def test_the_workaround_releases_an_inbound_slot_when_its_connection_closes():
    """With 4 inbound slots, 12 connections one after another are all served; the slot of each
    is free again once it closed. Without the workaround the 5th is refused (next test)."""
    server = bare_host(connection_config(SMALL))
    release_inbound_slot_on_close(swarm_of(server))
    slots = swarm_of(server)._inbound_limiter
    assert slots.total_tokens == 4
    async with line_server(server) as addr, AsyncExitStack() as stack:
        peers = [await stack.enter_async_context(raw_host()) for _ in range(2)]
        await churn(peers, addr, 3 * int(slots.total_tokens), echo_line)
        await until(lambda: slots.borrowed_tokens == 0, what="every inbound slot given back")


async def test_unpatched_libp2p_still_leaks_inbound_slots():
    """The control, and the canary of node/mesh/libp2p_patches.py: the same churn against the same
    host without the workaround is refused (at connection 5, unless py-libp2p's auto-connector
    happened to dial a peer itself), and the 4 slots stay taken though every connection closed.
    When this test fails, py-libp2p fixed the leak: drop the workaround."""
    server = bare_host(connection_config(SMALL))
    slots = swarm_of(server)._inbound_limiter
    async with line_server(server) as addr, AsyncExitStack() as stack:
        peers = [await stack.enter_async_context(raw_host()) for _ in range(2)]
        with pytest.raises(AssertionError, match=r"connection \d+ of 12 \(one at a time\) was not served"):
            await churn(peers, addr, 12, echo_line)
        # (py-libp2p's auto-connector may have dialed a peer back: that connection is outbound.)
        await until(lambda: inbound_connections(server) == 0, what="every inbound connection closed")
        assert slots.borrowed_tokens == 4


# ----- the finding, against a real node ----------------------------------------------------


async def test_a_node_accepts_connections_for_as_long_as_it_runs(figures):
    """300 connections one after another, each calling a tool, then a brand-new peer joins and
    calls it too. Fails on a node without the workaround at connection 251."""
    target = make_node(node_config("target", ECHO))
    async with target.running(), AsyncExitStack() as stack:
        addr = target.addrs[0]
        peers = [await stack.enter_async_context(raw_host()) for _ in range(CHURN_PEERS)]
        started = trio.current_time()
        await churn(peers, addr, ROUNDS, echo_tool)
        elapsed = trio.current_time() - started
        assert ROUNDS > LIBP2P_DEFAULT_INBOUND_SLOTS

        newcomer = make_node(node_config("newcomer", bootstrap=[addr]))
        await stack.enter_async_context(newcomer.running())
        await wait_all_know([newcomer], {"echo"})
        routed = await newcomer.call("echo", {"text": "still here"}, timeout=10)
        assert routed.result.content[0].text == "still here"
        assert target.host is not None
        slots = swarm_of(target.host)._inbound_limiter
        assert slots.borrowed_tokens <= 2  # the newcomer's connection (and at most one closing)
    figures(f"connections: {ROUNDS} sequential inbound connections, each a tool call, in {elapsed:.1f} s")


async def test_a_node_process_accepts_connections_for_as_long_as_it_runs(tmp_path, figures):
    """The finding as reported, through real processes: after 260 connections one at a time
    (each a tool call) against `praxis-node run`, `praxis-node call --peer` still succeeds."""
    rounds = LIBP2P_DEFAULT_INBOUND_SLOTS + 10
    config = write_config(tmp_path / "target", "target", ECHO, [])
    async with node_process(config) as (_, ready), AsyncExitStack() as stack:
        addr = ready["addrs"][0]
        peers = [await stack.enter_async_context(raw_host()) for _ in range(CHURN_PEERS)]
        started = trio.current_time()
        await churn(peers, addr, rounds, echo_tool)
        elapsed = trio.current_time() - started
        with trio.fail_after(30):
            out = await trio.run_process([*CLI, "call", "--peer", addr, "echo", "text=still here"], cwd=ROOT,
                                         capture_stdout=True, capture_stderr=True, check=False)
        assert out.returncode == 0, out.stderr.decode()[-2000:]
        assert "still here" in out.stdout.decode()
    figures(f"connections: {rounds} sequential connections to a node process in {elapsed:.1f} s, then a CLI call")


# ----- limits on what is open at once -------------------------------------------------------


async def test_per_ip_limit_refuses_the_excess_and_serves_another_address(caplog):
    """4 peers from 127.0.0.1 hold their connections (the limit); 3 more from 127.0.0.1 are
    refused, with the reason logged; a peer from 127.0.0.2 is served meanwhile. Once one of the
    4 leaves, a new peer from 127.0.0.1 is accepted: the limit counts what is open, not history."""
    caplog.set_level(logging.INFO, logger=LOG)
    per_ip = 4
    target = make_node(node_config("target", ECHO, limits={"max_connections_per_ip": per_ip}))
    async with target.running(), AsyncExitStack() as stack:
        addr = target.addrs[0]
        holders = [await stack.enter_async_context(raw_host()) for _ in range(per_ip)]
        for i, peer in enumerate(holders):
            await echo_tool(peer, addr, i)
        extra = [await stack.enter_async_context(raw_host()) for _ in range(3)]
        outcomes: list[bool] = []

        async def try_connect(peer: IHost) -> None:
            outcomes.append(await refused(peer, addr))

        async with trio.open_nursery() as nursery:
            for peer in extra:
                nursery.start_soon(try_connect, peer)
        assert outcomes == [True, True, True]
        lines = refusals(caplog, "refused an inbound connection from 127.0.0.1")
        assert lines and all(f"limits.max_connections_per_ip={per_ip}" in line for line in lines), lines

        other = await stack.enter_async_context(raw_host())
        await connect_from(other, addr, "127.0.0.2")
        assert target.host is not None
        (seen,) = swarm_of(target.host).get_connections(other.get_id())
        assert seen.muxed_conn.get_remote_address()[0] == "127.0.0.2"  # type: ignore[attr-defined]
        await echo_tool(other, addr, 100)
        for i, peer in enumerate(holders):  # the holders are still served too
            await echo_tool(peer, addr, 200 + i)

        target_id = parse_peer_addr(addr).peer_id
        with trio.fail_after(5):
            await holders[0].disconnect(target_id)
        late = await stack.enter_async_context(raw_host())
        with trio.fail_after(5):
            while await refused(late, addr):  # accepted once the node has seen the holder leave
                late = await stack.enter_async_context(raw_host())  # (a refused peer backs off 60 s)
        await echo_tool(late, addr, 300)


async def test_total_limit_keeps_room_for_the_nodes_own_dials_and_serves_a_connected_peer(caplog):
    """max_connections 8: inbound connections get 6 of them, the node's own dials the other 2.
    A good node connected first keeps being served while 5 raw peers take the other inbound
    slots and a 6th is refused; the target can still dial out twice, not a third time."""
    caplog.set_level(logging.INFO, logger=LOG)
    total = 8
    target = make_node(node_config("target", ECHO, limits={"max_connections": total, "max_connections_per_ip": 100}))
    async with target.running(), AsyncExitStack() as stack:
        assert target.host is not None
        addr = target.addrs[0]
        good = make_node(node_config("good", bootstrap=[addr]))
        await stack.enter_async_context(good.running())
        await wait_all_know([good], {"echo"})

        flood = [await stack.enter_async_context(raw_host()) for _ in range(6)]
        for i, peer in enumerate(flood[:5]):
            await echo_tool(peer, addr, i)
        assert await refused(flood[5], addr)
        assert inbound_connections(target.host) == 6
        lines = refusals(caplog, "inbound connections open or being set up (at most 6")
        assert lines, [r.getMessage() for r in caplog.records]

        routed = await good.call("echo", {"text": "good"}, timeout=10)
        assert routed.result.content[0].text == "good"

        outbound = [await stack.enter_async_context(raw_host()) for _ in range(3)]
        for peer in outbound[:2]:
            with trio.fail_after(10):
                await target.host.connect(parse_peer_addr(full_addrs(peer)[0]))
        assert len(swarm_of(target.host).get_connections()) == total
        with pytest.raises(Exception) as excinfo:
            with trio.fail_after(10):
                await target.host.connect(parse_peer_addr(full_addrs(outbound[2])[0]))
        assert "Maximum connections limit reached" in repr(excinfo.value.__cause__)  # py-libp2p's own limit
        assert len(swarm_of(target.host).get_connections()) == total

        routed = await good.call("echo", {"text": "still good"}, timeout=10)
        assert routed.result.content[0].text == "still good"


async def test_one_inbound_connection_per_peer():
    """A peer that opens a second and third connection keeps only its newest one on the node
    (py-libp2p's max_connections_per_peer alone keeps all three for its 20 s grace period)."""
    target = make_node(node_config("target", ECHO))
    async with target.running():
        assert target.host is not None
        info = parse_peer_addr(target.addrs[0])
        peer = bare_host(ConnectionConfig(max_connections_per_peer=10))
        async with peer.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            conns = []
            for _ in range(3):
                with trio.fail_after(5):
                    conns.append(await peer.get_network().dial_addr(info.addrs[0], info.peer_id))
            await until(lambda: len(swarm_of(target.host).get_connections(peer.get_id())) == 1,
                        what="the node keeps one connection of the peer")
            await until(lambda: all(c.is_closed for c in conns[:2]), what="the older two closed")
            assert not conns[2].is_closed
            await echo_tool(peer, target.addrs[0], 1)


async def test_streams_per_peer_limit_refuses_the_excess_while_another_peer_is_served(caplog):
    """A peer holds 8 silent tool streams (the limit); the 4 it opens next are reset at once, with
    the reason logged, while a good node's calls succeed. The limit counts streams open at
    once: after the peer closes its streams it can call again."""
    caplog.set_level(logging.INFO, logger=LOG)
    per_peer = 8
    target = make_node(node_config("target", ECHO, limits={"max_streams_per_peer": per_peer,
                                                           "idle_timeout_seconds": 60}))
    async with target.running(), AsyncExitStack() as stack:
        assert target.host is not None
        addr = target.addrs[0]
        good = make_node(node_config("good", bootstrap=[addr]))
        await stack.enter_async_context(good.running())
        await wait_all_know([good], {"echo"})

        attacker = await stack.enter_async_context(raw_host())
        await echo_tool(attacker, addr, 0)
        attacker_id = attacker.get_id()

        def open_on_target() -> int:
            assert target.host is not None
            return sum(len(c.get_streams()) for c in swarm_of(target.host).get_connections(attacker_id))

        await until(lambda: open_on_target() == 0, what="the node's streams with the attacker ended")
        slots_before = library_stream_slots(target.host)
        held: list[INetStream] = []
        refused_streams = 0
        for _ in range(per_peer + 4):
            try:
                held.append(await open_stream(attacker, addr, TOOL_PROTOCOL))
            except Exception:  # reset during protocol negotiation: refused
                refused_streams += 1
        assert len(held) <= per_peer and refused_streams >= 4, (len(held), refused_streams)
        assert open_on_target() <= per_peer
        lines = refusals(caplog, f"(limits.max_streams_per_peer={per_peer})")
        assert len(lines) >= 4 and all(str(attacker_id) in line for line in lines), lines

        for i in range(3):
            routed = await good.call("echo", {"text": f"good {i}"}, timeout=10)
            assert routed.result.content[0].text == f"good {i}"
        for stream in held:  # the held streams were never cut: the limit refused only the excess
            assert not await stream_ends(stream, 0.01)

        for stream in held:
            await stream.close()
        await until(lambda: open_on_target() == 0, what="the attacker's streams closed on the node")
        await echo_tool(attacker, addr, 1)
        # py-libp2p's own stream accounting got back every slot, the refused streams' included.
        await until(lambda: library_stream_slots(target.host) == slots_before, what="py-libp2p's stream slots returned")



class BrokenStream:
    """Test double: a stream whose socket is gone (every read and write raises OSError), as
    the library's identify handler meets it while a node stops."""

    muxed_conn = None

    async def read(self, n: int | None = None) -> bytes:
        raise OSError(9, "Bad file descriptor")

    async def write(self, data: bytes) -> None:
        raise OSError(9, "Bad file descriptor")

    async def close(self) -> None:
        return None

    async def reset(self) -> None:
        return None

    def get_protocol(self) -> None:
        return None


async def test_a_library_handler_that_raises_ends_only_its_stream():
    from libp2p.identity.identify.identify import ID as IDENTIFY

    node = make_node(node_config("guarded", [py_tool("echo", "echo", ECHO_PARAMS)]))
    async with node.running():
        identify = node.host.get_mux().handlers[IDENTIFY]
        assert identify is not None
        with trio.fail_after(10):
            await identify(BrokenStream())  # type: ignore[arg-type]  # py-libp2p's own raised OSError here
        async with raw_host() as peer:
            response = await call_tool(peer, full_addrs(node.host)[0], "echo", {"text": "still here"})
        assert response["result"]["content"][0]["text"] == "still here"


class ClosedListener:
    """Test double: a TCP listener whose socket the swarm has closed (py-libp2p's
    `TCPListener.get_addrs` raises this as a node stops)."""

    def get_addrs(self) -> tuple[()]:
        raise OSError(9, "Bad file descriptor")


async def test_a_host_whose_listener_closed_lists_no_address():
    node = make_node(node_config("closing"))
    async with node.running():
        listening = node.host.get_addrs()
        network = node.host.get_network()
        network.listeners["closing"] = ClosedListener()  # type: ignore[assignment,index]
        try:
            assert node.host.get_addrs() == listening  # py-libp2p's own raised OSError here
        finally:
            del network.listeners["closing"]  # type: ignore[arg-type]
