"""Issue 8, finding 10: a node with more than 256 peers in its directory still lists its peers.

`/praxis/peers/1.0.0` lists at most MAX_PEERS_LISTED (256) peers; the node's own list is cut
to that many and skips entries that cannot be listed, instead of raising a ValidationError
out of `peer_list()` and the stream handler.
"""

from __future__ import annotations

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from protocols.messages import Card
from protocols.peers import MAX_PEERS_LISTED, PEERS_PROTOCOL
from protocols.tool import TOOL_PROTOCOL
from tests.helpers import ECHO_PARAMS, make_node, node_config, py_tool, running
from tests.raw_peer import frame, open_stream, raw_host, read_json, stream_ends

KNOWN = 300  # peers in the directory, more than one list may hold
NOT_A_PEER_ID = "0OIl"  # base58 has no 0, O, I or l: sorts first and cannot be listed


def peer_ids(count: int) -> list[str]:
    return [ID.from_pubkey(create_new_key_pair().public_key).to_string() for _ in range(count)]


def fill(directory, ids: list[str]) -> None:
    for i, peer_id in enumerate(ids):
        directory.update(Card.model_validate({"name": f"peer-{i}", "peerId": peer_id, "tools": [
            {"name": f"tool{i}"}], "addrs": [f"/ip4/127.0.0.1/tcp/{20000 + i}/p2p/{peer_id}"]}))


async def test_peer_list_holds_at_most_256_listable_peers():
    node = make_node(node_config("lister"))
    ids = peer_ids(KNOWN)
    async with running(node):
        fill(node.directory, [NOT_A_PEER_ID, *ids])
        assert len(node.directory.peers()) == KNOWN + 1
        listed = node.peer_list()
    assert len(listed.peers) == MAX_PEERS_LISTED
    listed_ids = [record.peer_id for record in listed.peers]
    assert NOT_A_PEER_ID not in listed_ids
    assert set(listed_ids) <= set(ids) and len(set(listed_ids)) == MAX_PEERS_LISTED


async def test_peers_stream_is_served_with_more_than_256_peers():
    node = make_node(node_config("lister", [py_tool("echo", "echo", ECHO_PARAMS)]))
    ids = peer_ids(KNOWN)
    async with running(node), raw_host() as asker:
        fill(node.directory, ids)
        stream = await open_stream(asker, node.addrs[0], PEERS_PROTOCOL)
        listed = await read_json(stream, timeout=10)
        assert await stream_ends(stream, 5)
        assert len(listed["peers"]) == MAX_PEERS_LISTED
        assert {record["peerId"] for record in listed["peers"]} <= set(ids)
        record = listed["peers"][0]
        assert record["addrs"] == [f"/ip4/127.0.0.1/tcp/{20000 + ids.index(record['peerId'])}/p2p/{record['peerId']}"]
        # The node carries on: a second list, and a call.
        stream = await open_stream(asker, node.addrs[0], PEERS_PROTOCOL)
        assert len((await read_json(stream, timeout=10))["peers"]) == MAX_PEERS_LISTED
        stream = await open_stream(asker, node.addrs[0], TOOL_PROTOCOL)
        await stream.write(frame({"id": "after", "name": "echo", "arguments": {"text": "still here"}}))
        response = await read_json(stream, timeout=10)
        assert response["result"]["isError"] is False
        assert response["result"]["content"][0]["text"] == "still here"


async def test_peer_list_stays_small_when_peers_carry_big_cards():
    """128 peers with near-1 MiB cards would make a 128 MiB list no reader accepts: past a byte
    budget, peers are listed without their tools, and the list still fits in one frame."""
    from node.mesh.peer_exchange import PEER_LIST_TOOL_BYTES

    node = make_node(node_config("lister"))
    ids = peer_ids(40)
    description = "d" * 4000
    async with running(node):
        for i, peer_id in enumerate(ids):
            node.directory.update(Card.model_validate({"name": f"peer-{i}", "peerId": peer_id, "tools": [
                {"name": f"tool{i}_{j}", "description": description} for j in range(50)]}))
        listed = node.peer_list()
    assert len(listed.peers) == len(ids)  # every peer is still listed
    with_tools = [r for r in listed.peers if r.tools]
    assert 0 < len(with_tools) < len(ids)
    assert len(listed.model_dump_json(by_alias=True)) < PEER_LIST_TOOL_BYTES + 64 * 1024
    assert len(listed.model_dump_json(by_alias=True)) < node.limits.max_frame_bytes
