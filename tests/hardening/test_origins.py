"""Policy sees the origin of a forwarded call (issue 8, finding 3).

Node B serves `secret` (only A may call it), `echo` (X may not) and a process tool (only A
may run it). X is connected to A alone and asks A for all three: before origins were signed,
A forwarded with its own identity and B ran each. Now B judges the origin (X) as well as the
peer in front (A). Raw libp2p peers stand in for a Go caller (no proof) and for a hostile
forwarder replaying or forging proofs.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from pathlib import Path

from protocols.errors import NotAllowed
from protocols.origin import sign_origin
from tests.helpers import ECHO_PARAMS, make_node, node_config, py_tool, wait_until
from tests.raw_peer import frame, open_stream, raw_host, read_json


def request(tool: str, text: str, **extra: object) -> bytes:
    return frame({"id": f"r-{tool}-{text}", "name": tool, "arguments": {"text": text}, **extra})


async def three_nodes(stack: AsyncExitStack, tmp_path: Path):
    a = make_node(node_config("a", p2p={"peer_exchange": False, "discovery": False}))
    x = make_node(node_config("x", p2p={"peer_exchange": False, "discovery": False}))
    marker = tmp_path / "proc-ran"
    b = make_node(node_config("b", [
        py_tool("secret", "echo", ECHO_PARAMS, allow_peers=[a.peer_id]),
        py_tool("echo", "echo", ECHO_PARAMS, deny_peers=[x.peer_id]),
        py_tool("open", "echo", ECHO_PARAMS),
        {"name": "proc", "engine": "process", "params": ECHO_PARAMS, "allow_peers": [a.peer_id],
         "engineSpec": {"command": ["sh", "-c", f'touch {marker}; printf %s "$text"']}},
    ], p2p={"peer_exchange": False, "discovery": False}, engines={"process": {"enabled": True}}))
    await stack.enter_async_context(b.running())
    a.config.p2p.bootstrap_nodes = b.addrs[:1]
    await stack.enter_async_context(a.running())
    x.config.p2p.bootstrap_nodes = a.addrs[:1]
    await stack.enter_async_context(x.running())
    await wait_until(lambda: "secret" in a.router.tools(), a.directory.changed)
    await wait_until(lambda: x.directory.get(a.peer_id) is not None, x.directory.changed)
    assert b.peer_id not in x.connected_peers()  # X reaches B only through A
    return a, b, x, marker


async def test_a_forwarded_call_is_judged_by_its_origin(tmp_path):
    async with AsyncExitStack() as stack:
        a, b, x, marker = await three_nodes(stack, tmp_path)
        for tool in ("secret", "echo", "proc"):
            response = await x.request_peer(a.peer_id, tool, {"text": "from x"})
            assert response.error is not None and response.error.code == NotAllowed.code
            assert f"{x.peer_id} (through {a.peer_id}) is not allowed" in response.error.message
        assert not marker.exists()  # the process tool never ran for X
        # What X may call still works through A, and A itself is still served.
        assert (await x.request_peer(a.peer_id, "open", {"text": "hi"})).result.text_output() == "hi"
        assert (await a.call("secret", {"text": "a"})).result.text_output() == "a"
        assert (await a.call("proc", {"text": "p"})).result.text_output() == "p" and marker.exists()


async def test_an_unproven_origin_only_reaches_tools_open_to_everyone(tmp_path):
    async with AsyncExitStack() as stack:
        a, b, x, marker = await three_nodes(stack, tmp_path)
        async with raw_host() as go:  # a Go caller: no origin proof, no hops field
            stream = await open_stream(go, a.addrs[0], "/praxis/tool/1.0.0")
            await stream.write(request("open", "go"))
            assert (await read_json(stream))["result"]["content"][0]["text"] == "go"
            for tool in ("secret", "proc"):
                stream = await open_stream(go, a.addrs[0], "/praxis/tool/1.0.0")
                await stream.write(request(tool, "go"))
                answer = await read_json(stream)
                assert answer["error"]["code"] == NotAllowed.code
                assert "without proof of its origin" in answer["error"]["message"]
        assert not marker.exists()


async def test_replayed_and_forged_origin_proofs_are_refused():
    async with AsyncExitStack() as stack:
        x = make_node(node_config("x"))  # only its key is used: it signs, a raw host sends
        b = make_node(node_config("b", [py_tool("open", "echo", ECHO_PARAMS)]))
        await stack.enter_async_context(b.running())
        async with raw_host() as forwarder:
            m = forwarder.get_id().to_string()
            expires = int(time.time() * 1000) + 30_000

            def proof(target: str, text: str = "t", signer=x) -> dict:
                return sign_origin(signer.key_pair.private_key, x.peer_id, target=target, tool="open",
                                   arguments={"text": text}, expires_ms=expires).to_wire()

            async def send(text: str, origin: dict) -> dict:
                stream = await open_stream(forwarder, b.addrs[0], "/praxis/tool/1.0.0")
                await stream.write(request("open", text, hops=2, origin=origin))
                return await read_json(stream)

            # X's proof for a call it sent to M, forwarded by M: accepted once, then a replay.
            good = proof(target=m)
            assert (await send("t", good))["result"]["content"][0]["text"] == "t"
            replay = await send("t", good)
            assert replay["error"]["code"] == NotAllowed.code and "replays" in replay["error"]["message"]
            # The same proof with other arguments, or signed by someone else, does not hold.
            changed = await send("other", proof(target=m))
            assert "does not match" in changed["error"]["message"]
            forged = await send("t", proof(target=m, signer=make_node(node_config("y"))))
            assert "does not match" in forged["error"]["message"]
            # A signature that is not even 64 bytes is refused the same way (it used to raise
            # out of the signature check, and the caller got a reset stream instead of an answer).
            for signature in ("AAAA", "A" * 256):
                short = await send("t", {**proof(target=m), "signature": signature})
                assert short["error"]["code"] == NotAllowed.code and "does not match" in short["error"]["message"]
            # A proof X made for a direct call to B cannot be sent by anyone but X.
            direct = await send("t", proof(target=b.peer_id))
            assert "for a direct call to this node" in direct["error"]["message"]
            expired = sign_origin(x.key_pair.private_key, x.peer_id, target=m, tool="open",
                                  arguments={"text": "t"}, expires_ms=int(time.time() * 1000) - 120_000)
            assert "expired" in (await send("t", expired.to_wire()))["error"]["message"]


def test_parsed_origin_keys_are_bounded_and_never_stand_in_for_the_signature_check(monkeypatch):
    # OriginCheck keeps origins' public keys parsed (a peer ID always means the same key); the
    # memory is bounded, and a proof from an origin whose key is kept is still checked in full.
    import pytest
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    from node.mesh import origins
    from protocols.messages import ToolRequest

    monkeypatch.setattr(origins, "MAX_KEYS", 4)
    me, forwarder = (ID.from_pubkey(create_new_key_pair().public_key).to_base58() for _ in range(2))
    check = origins.OriginCheck(me)
    expires = int(time.time() * 1000) + 30_000

    def call(key_pair, text: str, signed_text: str | None = None) -> ToolRequest:
        peer_id = ID.from_pubkey(key_pair.public_key).to_base58()
        proof = sign_origin(key_pair.private_key, peer_id, target=forwarder, tool="open",
                            arguments={"text": signed_text or text}, expires_ms=expires)
        return ToolRequest(id="r", name="open", arguments={"text": text}, hops=2, origin=proof)

    pairs = [create_new_key_pair() for _ in range(10)]
    for pair in pairs:
        assert check.identify(call(pair, "t"), forwarder, {"text": "t"}).origin_proven
        assert len(check._keys) <= 4
    kept = pairs[-1]  # its key is in the memory now
    with pytest.raises(NotAllowed, match="does not match"):
        check.identify(call(kept, "other", signed_text="t"), forwarder, {"text": "other"})
