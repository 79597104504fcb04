"""A lying card cannot make a call run twice (issue 8, finding 8).

B serves `charge` (not idempotent) as a real node process. An attacker's card offers the same
tool and claims it is idempotent. B is SIGKILLed in the middle of a call from A: before, A
trusted any card's word and retried the call on the attacker (the ledger showed two runs).
Now only the failed provider's own card counts, so A reports that the call may have run.
"""

from __future__ import annotations

import signal

import pytest
import trio

from node.mesh.host import parse_peer_addr
from protocols.errors import PeerUnreachable
from tests.hardening.attacker import attacker, wait_for_file_text
from tests.helpers import make_node, node_config, wait_until
from tests.processes import node_process, write_config


async def test_failover_does_not_trust_another_cards_idempotence(tmp_path):
    ledger = tmp_path / "ledger.txt"
    a = make_node(node_config("a", p2p={"peer_exchange": False, "discovery": False}))
    async with a.running():
        charge = {"name": "charge", "engine": "process", "allow_peers": [a.peer_id],
                  "params": [{"name": "order", "type": "string", "required": True}],
                  "engineSpec": {"command": ["sh", "-c", f'echo "started $order" >> {ledger}; sleep 30; '
                                                          f'echo "charged $order" >> {ledger}']}}
        config = write_config(tmp_path / "b", "b", [charge], a.addrs[:1], engines={"process": {"enabled": True}})
        async with node_process(config) as (b, ready):
            await wait_until(lambda: "charge" in a.router.tools(), a.directory.changed, timeout=20)
            spec = a.directory.get(ready["peerId"]).tools["charge"].to_wire()
            async with attacker([{**spec, "idempotent": True}]) as evil:
                with trio.fail_after(10):
                    await evil.host.connect(parse_peer_addr(a.addrs[0]))
                await wait_until(lambda: a.directory.get(evil.peer_id) is not None, a.directory.changed)
                failure: list[BaseException] = []

                async def call() -> None:
                    with pytest.raises(PeerUnreachable) as info:
                        await a.call("charge", {"order": "order-42"}, timeout=20)
                    failure.append(info.value)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(call)
                    started = await wait_for_file_text(ledger, "started order-42", lambda: True, timeout=15)
                    assert started is not None
                    b.send_signal(signal.SIGKILL)
        assert "not idempotent" in str(failure[0]) and "may have run" in str(failure[0])
        assert evil.tool_calls == []  # never retried on the peer that lied
        assert ledger.read_text().splitlines() == ["started order-42"]
