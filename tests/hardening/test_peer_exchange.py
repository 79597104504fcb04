"""What a hostile peer list can do (issue 8, findings 1 and 9).

1. A list naming a peer ID that is not one (`"0OIl"`) ended the node (exit 2). Now the list
   is refused as a whole, logged, and the node keeps serving. Checked on a real node process.
9. One list made 136 TCP connects to an address the attacker chose. Now each list causes
   at most `dial_budget.PER_LIST` dials, one address per listed peer, within per-source,
   per-host, per-address and total budgets a minute.

Peer exchange is off by default since issue 13 (the DHT and GossipSub find peers and tools);
these tests switch it on (`p2p.peer_exchange: true`), where it keeps every bound above.
"""

from __future__ import annotations

import json
from functools import partial

import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from node.mesh import dial_budget
from tests.hardening.attacker import attacker, wait_for_file_text, watching
from tests.helpers import ECHO_PARAMS, make_node, node_config, py_tool
from tests.processes import node_process, write_config
from tests.raw_peer import frame, open_stream, raw_host, read_json


def fake_peer_id() -> str:
    return ID.from_pubkey(create_new_key_pair().public_key).to_string()


async def test_a_peer_list_with_a_bad_peer_id_does_not_end_the_node(tmp_path):
    async with attacker([]) as evil:
        evil.peer_list = {"peers": [{"peerId": "0OIl"}]}
        config = write_config(tmp_path / "victim", "victim", [py_tool("echo", "echo", ECHO_PARAMS)], [evil.addr],
                              p2p={"peer_exchange": True})
        async with node_process(config) as (proc, ready):
            with trio.fail_after(20):
                await evil.served.wait()  # the node asked for the list and got it
            log = config.parent / "node.log"
            seen = await wait_for_file_text(log, r"peer list from \S+ refused: .*not a valid peer ID",
                                            lambda: proc.returncode is None, timeout=20)
            assert proc.returncode is None, log.read_text()[-2000:]
            assert seen is not None
            async with raw_host() as good:  # still serving, to anyone
                stream = await open_stream(good, ready["addrs"][0], "/praxis/tool/1.0.0")
                await stream.write(frame({"id": "1", "name": "echo", "arguments": {"text": "alive"}}))
                assert (await read_json(stream))["result"]["content"][0]["text"] == "alive"


async def test_one_peer_list_causes_a_bounded_number_of_dials():
    connects = 0

    async def count(stream: trio.SocketStream) -> None:
        nonlocal connects
        connects += 1
        await stream.aclose()  # not a libp2p peer: every dial fails at once

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, count, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        records = [{"peerId": pid, "addrs": [f"/ip4/127.0.0.1/tcp/{port}/p2p/{pid}"] * 16}
                   for pid in (fake_peer_id() for _ in range(32))]
        async with attacker([]) as evil:
            evil.peer_list = {"peers": records}
            victim = make_node(node_config("victim", bootstrap=[evil.addr], p2p={"peer_exchange": True},
                                           limits={"connect_timeout_seconds": 2}))
            async with watching("praxis.dialer", r"discovered peer \S+ unreachable") as failed, \
                    watching("praxis.node", r"dial budget spent") as refused, victim.running():
                with trio.fail_after(20):
                    await evil.served.wait()
                    await refused.seen.wait()  # the list was walked: every dial it allows has started
                    while len(failed.matches) < dial_budget.PER_ADDRESS_PER_MINUTE:
                        await failed.seen.wait()
                        failed.seen = trio.Event()
        nursery.cancel_scope.cancel()
    # One address, one dial a minute, however many peers and addresses the list names.
    assert len(failed.matches) == dial_budget.PER_ADDRESS_PER_MINUTE
    assert 1 <= connects <= dial_budget.PER_ADDRESS_PER_MINUTE * 4  # py-libp2p may retry one dial
    print(json.dumps({"listed_peers": len(records), "connects": connects}))


async def test_the_node_never_dials_peerstore_entries_on_its_own():
    """py-libp2p's AutoConnector dials whatever the peerstore holds (addresses peers told us);
    on a node's host it is switched off (node/mesh/libp2p_patches.py `disable_auto_connector`)."""
    from libp2p.network.swarm import Swarm
    from multiaddr import Multiaddr

    connects = 0

    async def count(stream: trio.SocketStream) -> None:
        nonlocal connects
        connects += 1
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, count, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        node = make_node(node_config("quiet"))
        async with node.running():
            assert node.host is not None
            swarm = node.host.get_network()
            assert isinstance(swarm, Swarm)
            for _ in range(5):  # what a hostile peer list or identify would leave behind
                peer = ID.from_base58(fake_peer_id())
                node.host.get_peerstore().add_addrs(peer, [Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")], 3600)
            with trio.fail_after(30):
                await swarm.auto_connector.maybe_connect()  # returns once its dials are done
        nursery.cancel_scope.cancel()
    assert connects == 0
