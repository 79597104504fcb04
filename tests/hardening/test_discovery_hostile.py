"""Hostile input to the DHT and GossipSub handlers (issue 13): the node keeps serving.

A raw libp2p peer with its own py-libp2p Pubsub (its 10-a-second publish limit lifted) publishes
oversized, malformed, forged and flooding announcements on `/praxis/cards/1.0.0`; another speaks
`/ipfs/kad/1.0.0` with an oversized length prefix, garbage, values for the praxis namespace and a flood of provider
records. After each, a good peer's call is answered. The provider-record lifetime patch has a
canary that fails without it.
"""

from __future__ import annotations

import json
import time

import trio
import varint
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.peer.peerinfo import PeerInfo

from node.mesh.tool_dht import tool_key
from protocols.announce import CARDS_TOPIC, MAX_ANNOUNCEMENT_BYTES
from protocols.tool import TOOL_PROTOCOL
from tests.helpers import ECHO_PARAMS, counter, make_node, node_config, py_tool, wait_until
from tests.raw_peer import frame, open_stream, raw_host, raw_pubsub, read_json, wire_card

FLOOD = 30


async def still_serves(addr: str) -> None:
    async with raw_host() as good:
        stream = await open_stream(good, addr, TOOL_PROTOCOL)
        await stream.write(frame({"id": "ok", "name": "echo", "arguments": {"text": "alive"}}))
        assert (await read_json(stream, timeout=10))["result"]["content"][0]["text"] == "alive"


async def test_hostile_announcements_are_dropped_and_the_node_keeps_serving(figures):
    victim = make_node(node_config("victim", [py_tool("echo", "echo", ECHO_PARAMS)],
                                   limits={"max_card_pushes_per_minute": 12}))
    async with victim.running(), raw_host() as evil:
        assert victim.announcements is not None
        async with raw_pubsub(evil, victim.host, CARDS_TOPIC) as (pubsub, _):
            evil_id = evil.get_id().to_string()
            announcements = victim.announcements
            started = time.monotonic()
            # A flood of valid announcements from one signer (FLOOD fits py-libp2p's outbound queue of
            # 32 RPCs, so every one is sent): 12 a minute pass, the rest are dropped unforwarded.
            for i in range(FLOOD):
                flood = {"card": wire_card(evil_id, f"evil{i}"), "seq": i}
                await pubsub.publish(CARDS_TOPIC, json.dumps(flood).encode())
            await wait_until(lambda: announcements.refused >= FLOOD - 12, announcements.dropped, timeout=20)
            hostile = [
                json.dumps({"card": wire_card(victim.peer_id, "evil")}).encode(),  # names another peer than its signer
                json.dumps({"card": {"peerId": evil_id}}).encode(),  # invalid card (no name)
                b"{not json",  # malformed
            ]
            for data in hostile:  # over the rate limit already: refused before parsing, like any more
                await pubsub.publish(CARDS_TOPIC, data)
            await wait_until(lambda: announcements.refused >= FLOOD - 12 + len(hostile), announcements.dropped,
                             timeout=20)
            await pubsub.publish(CARDS_TOPIC, b"x" * (MAX_ANNOUNCEMENT_BYTES + 1))  # too large
            await wait_until(lambda: announcements.refused >= FLOOD - 12 + len(hostile) + 1, announcements.dropped,
                             timeout=20)
            took = time.monotonic() - started
            entry = victim.directory.get(evil_id)
            assert entry is not None and entry.card.name.startswith("evil")  # 12 accepted, the rest dropped
            assert victim.directory.get(victim.peer_id) is None
            assert counter(victim, "praxis_announcements", event="dropped") == announcements.refused  # on /metrics
            await still_serves(victim.addrs[0])
            figures(f"discovery hostile: {FLOOD} flooding and {len(hostile) + 1} malformed announcements, "
                    f"{victim.announcements.refused} dropped in {took:.2f} s; node still serving")


async def _kad(host, addr: str, payload: bytes) -> bytes:
    if host is None:  # a fresh attacker for a message that may cost it its connection
        async with raw_host() as fresh:
            return await _kad(fresh, addr, payload)
    stream = await open_stream(host, addr, "/ipfs/kad/1.0.0")
    await stream.write(payload)
    data = b""
    with trio.move_on_after(5):
        while True:
            try:
                chunk = await stream.read(65536)
            except (StreamEOF, StreamReset):  # the node ended the stream: what these tests expect
                break
            if not chunk:
                break
            data += chunk
    return data


async def test_hostile_dht_messages_leave_the_node_serving(figures):
    victim = make_node(node_config("victim", [py_tool("echo", "echo", ECHO_PARAMS)]))
    async with victim.running(), raw_host() as evil:
        assert victim.dht is not None
        addr = victim.addrs[0]
        # A length prefix of 64 MiB: refused before any of it is read.
        await _kad(None, addr, varint.encode(64 * 1024 * 1024) + b"\0" * 1024)
        # Garbage that is not a protobuf.
        await _kad(None, addr, varint.encode(16) + b"\xff" * 16)
        # A value for this mesh's namespace: the DHT stores no values.
        put = Message(type=Message.MessageType.PUT_VALUE)
        put.key = b"/praxis-tool/x"
        put.record.key = b"/praxis-tool/x"
        put.record.value = b"v" * 1000
        raw = put.SerializeToString()
        await _kad(None, addr, varint.encode(len(raw)) + raw)
        assert len(victim.dht.dht.value_store.store) == 0
        # A flood of provider records for made-up keys: py-libp2p takes 10 per peer per 10 s.
        stored_before = victim.dht.dht.provider_store.size()
        flood = b""
        for i in range(50):  # on one stream, as the DHT protocol allows
            add = Message(type=Message.MessageType.ADD_PROVIDER)
            add.key = bytes.fromhex(tool_key(f"made-up-{i}"))
            provider = add.providerPeers.add()
            provider.id = evil.get_id().to_bytes()
            provider.addrs.append(evil.get_addrs()[0].to_bytes())
            raw = add.SerializeToString()
            flood += varint.encode(len(raw)) + raw
        await _kad(evil, addr, flood)
        stored = victim.dht.dht.provider_store.size() - stored_before
        assert stored <= 10
        await still_serves(addr)
        figures(f"discovery hostile: 50 ADD_PROVIDER for made-up keys from one peer: {stored} stored; "
                "oversized, garbage and PUT_VALUE refused; node still serving")


async def test_provider_records_expire_after_the_ttl():
    """node/mesh/libp2p_patches.py `bound_provider_store`: without it py-libp2p serves a record 48 h."""
    node = make_node(node_config("n", p2p={"provider_ttl_seconds": 5}))
    async with node.running():
        assert node.dht is not None
        store = node.dht.dht.provider_store
        key = bytes.fromhex(tool_key("gone"))
        store.add_provider(key, PeerInfo(node.host.get_id(), node.host.get_addrs()))
        assert store.get_providers(key)
        for record in store.providers[key].values():
            record.timestamp -= 6  # stored 6 s ago: past the 5 s TTL, far within py-libp2p's 48 h
        assert store.get_providers(key) == []
