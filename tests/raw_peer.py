"""A bare libp2p host that writes praxis frames by hand, the way the Go node does.

Nothing of node/ is used on the client side except `build_host` (Noise + yamux), so these
tests see exactly the bytes a foreign implementation would send.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream, ISubscriptionAPI
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.peerinfo import PeerInfo
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.exceptions import MuxedStreamError
from libp2p.tools.anyio_service import background_trio_service

from node.config import LimitsSection, P2PSection
from node.mesh.host import build_host, parse_peer_addr
from protocols.tool import TOOL_PROTOCOL


@asynccontextmanager
async def raw_host() -> AsyncIterator[IHost]:
    host = build_host(create_new_key_pair(), P2PSection(enable_mdns=False), LimitsSection())
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        try:
            yield host
        finally:
            for peer in list(host.get_network().connections):
                with trio.move_on_after(2):
                    await host.disconnect(peer)


def wire_card(peer_id: str, name: str, tools: int = 1) -> dict[str, Any]:
    """A minimal card as it travels (in an announcement or a card exchange)."""
    return {"name": name, "peerId": peer_id, "tools": [{"name": f"{name}_{i}"} for i in range(tools)]}


@asynccontextmanager
async def running_pubsub(host: IHost, prepare: Callable[[Pubsub], None] = lambda pubsub: None) -> AsyncIterator[Pubsub]:
    """py-libp2p's own GossipSub on `host`, running (`prepare` may change the Pubsub before it
    starts); it signs what it publishes with `host`'s key. Its 10-a-second limit on its own
    messages is lifted."""
    router = GossipSub([PROTOCOL_ID_V11], 6, 4, 12, heartbeat_interval=1, max_messages_per_topic_per_second=1e6)
    pubsub = Pubsub(host, router)
    prepare(pubsub)
    async with background_trio_service(pubsub), background_trio_service(router):
        await pubsub.wait_until_ready()
        yield pubsub


@asynccontextmanager
async def raw_pubsub(host: IHost, victim: IHost, topic: str) -> AsyncIterator[tuple[Pubsub, ISubscriptionAPI]]:
    """`running_pubsub` on `host`, connected to `victim` once `victim` subscribes to `topic`
    too, and its own subscription to `topic`."""
    async with running_pubsub(host) as pubsub:
        subscription = await pubsub.subscribe(topic)
        with trio.fail_after(10):
            await host.connect(PeerInfo(victim.get_id(), victim.get_addrs()))
            await pubsub.wait_for_peer(victim.get_id())
            while victim.get_id() not in pubsub.peer_topics.get(topic, set()):
                await trio.sleep(0.05)  # bounded above; pubsub's wait_for_subscription missed it in CI
        yield pubsub, subscription


def bare_host(config: ConnectionConfig) -> IHost:
    """A py-libp2p host as build_host makes it, minus the node's limits and the workarounds."""
    key_pair = create_new_key_pair()
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    return new_host(key_pair=key_pair, sec_opt={NOISE_PROTOCOL_ID: noise}, muxer_preference="YAMUX",
                    connection_config=config)


@asynccontextmanager
async def unpatched_host() -> AsyncIterator[IHost]:
    """A bare_host with the library's defaults, listening on 127.0.0.1: for the canaries of
    node.mesh.libp2p_patches, which fail once py-libp2p no longer needs a workaround."""
    host = bare_host(ConnectionConfig())
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        yield host


async def open_stream(host: IHost, addr: str, protocol: str) -> INetStream:
    info = parse_peer_addr(addr)
    with trio.fail_after(5):
        await host.connect(info)
        return await host.new_stream(info.peer_id, [protocol])  # type: ignore[list-item]


async def connect_from(host: IHost, addr: str, source_ip: str) -> None:
    """Connect to `addr` from the local address `source_ip`: on Linux every 127.x.y.z is a
    loopback address, so a peer connecting from 127.0.0.2 is a peer from another IP."""
    info = parse_peer_addr(addr)
    with trio.fail_after(5):
        await host.get_network().dial_addr(info.addrs[0], info.peer_id, source=(source_ip, 0))  # type: ignore[call-arg]


async def call_tool(host: IHost, addr: str, name: str, arguments: dict[str, Any], request_id: str = "raw-1") -> Any:
    """One tool call by hand (a Go-style request frame); returns the response frame as JSON."""
    stream = await open_stream(host, addr, TOOL_PROTOCOL)
    try:
        await stream.write(frame({"id": request_id, "name": name, "arguments": arguments,
                                  "timestamp": int(time.time() * 1000)}))
        return await read_json(stream)
    finally:
        with trio.move_on_after(2):
            await stream.close()


async def read_line(stream: INetStream, timeout: float = 5.0, limit: int = 1 << 20) -> bytes:
    """Read until newline, as the Go node does (never until EOF). Raises on EOF/reset."""
    buf = b""
    with trio.fail_after(timeout):
        while b"\n" not in buf:
            chunk = await stream.read(65536)
            if not chunk:
                raise EOFError("stream ended")
            buf += chunk
            assert len(buf) < limit
    return buf.split(b"\n", 1)[0]


async def read_json(stream: INetStream, timeout: float = 5.0) -> Any:
    return json.loads(await read_line(stream, timeout))


def frame(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"


async def stream_ends(stream: INetStream, timeout: float) -> bool:
    """True when the stream is closed or reset by the other side within `timeout`."""
    with trio.move_on_after(timeout):
        try:
            while True:
                if not await stream.read(65536):
                    return True
        except (StreamError, MuxedStreamError):  # EOF or reset: the node ended the stream, as wanted
            return True
    return False
