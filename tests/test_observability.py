"""What a node tells about itself: `GET /healthz`, `/status` and `/metrics` on its HTTP port, the
call log, and label sets a hostile peer cannot grow. Everything runs on 127.0.0.1.

The 3-node mesh used here (all bootstrap from node-0, which serves the MCP endpoint):
node-0 has `echo` and `secret` (refused to every peer), node-1 has `add`, node-2 has `fail`.
"""

from __future__ import annotations

import json
import logging
import random
import time
from contextlib import AsyncExitStack
from typing import Any

import httpx2
import mcp
import pytest
import trio
import trio.testing
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from mcp.shared.exceptions import MCPError
from prometheus_client import generate_latest

from node.app import Node, default_engines
from node.mesh.stats import OTHER, REASONS, MeshStats, ToolLabels
from node.runtime.signals import ChangeSignal
from protocols.errors import Busy
from protocols.tool import TOOL_PROTOCOL
from tests.endpoint_app import serving_app
from tests.helpers import (
    ECHO_PARAMS,
    Samples,
    make_node,
    node_config,
    parse_metrics,
    py_tool,
    start_mesh,
    value,
    wait_all_know,
    wait_until,
)
from tests.raw_peer import call_tool, frame, open_stream, raw_host, read_json

ADD_PARAMS = [{"name": "a", "type": "number", "required": True},
              {"name": "b", "type": "number", "required": True}]
FAIL_PARAMS = [{"name": "message", "type": "string", "required": True}]
MESH_TOOLS = [
    [py_tool("echo", "echo", ECHO_PARAMS), py_tool("secret", "echo", ECHO_PARAMS, deny_peers=["*"])],
    [py_tool("add", "add", ADD_PARAMS)],
    [py_tool("fail", "fail", FAIL_PARAMS)],
]
CANARY = "canary-arg-5f3e9b1d"  # an argument value (echoed back as the result): never in a log line
TOKEN = "tok-observe-2c9d"
REMOTE_HOST = "203.0.113.5:8090"  # a documentation address (RFC 5737), used only as a Host header
PATHS = ("/healthz", "/status", "/metrics")

def calls_total(samples: Samples) -> dict[tuple[str, str, str], float]:
    """praxis_calls_total as {(role, tool, outcome): count}."""
    return {(dict(labels)["role"], dict(labels)["tool"], dict(labels)["outcome"]): v
            for (name, labels), v in samples.items() if name == "praxis_calls_total"}


def refused(samples: Samples) -> dict[str, float]:
    return {dict(labels)["reason"]: v for (name, labels), v in samples.items() if name == "praxis_calls_refused_total"}


def no_refusals(**counts: int) -> dict[str, float]:
    return {reason: float(counts.get(reason, 0)) for reason in REASONS}


def base_url(node: Node) -> str:
    return node.mcp_url.removesuffix("/mcp")


async def get(url: str, **headers: str) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=10) as http:
        return await http.get(url, headers=headers)


async def test_metrics_status_health_and_call_log_after_real_calls_across_three_nodes(
    caplog: pytest.LogCaptureFixture, figures: Any
) -> None:
    caplog.set_level(logging.INFO)
    async with AsyncExitStack() as stack:
        a, b, c = await start_mesh(stack, MESH_TOOLS, mcp={"enabled": True, "port": 0})
        await wait_all_know([a, b, c], {"echo", "secret", "add", "fail"})
        caplog.clear()

        # Calls made by an MCP client of node-0: local, on node-1, on node-2 (which fails), and
        # two the endpoint refuses itself (bad arguments, unknown tool).
        async with mcp.Client(a.mcp_url, mode="legacy") as client:
            for _ in range(2):
                result = await client.call_tool("echo", {"text": CANARY})
                assert result.content[0].text == CANARY  # type: ignore[union-attr]
            for i in range(3):
                result = await client.call_tool("add", {"a": i, "b": 1})
                assert result.structured_content == {"sum": i + 1}
            assert (await client.call_tool("fail", {"message": "boom"})).is_error
            assert (await client.call_tool("add", {"a": "two", "b": 1})).is_error
            with pytest.raises(MCPError, match="unknown tool 'nope'"):
                await client.call_tool("nope", {})
        # Calls node-2 sends to node-0 itself: forwarded to node-1, served, refused by policy.
        forwarded = await c.request_peer(a.peer_id, "add", {"a": 2, "b": 2})
        assert forwarded.error is None and forwarded.result.structured_content == {"sum": 4}
        served = await c.request_peer(a.peer_id, "echo", {"text": CANARY})
        assert served.error is None
        denied = await c.request_peer(a.peer_id, "secret", {"text": CANARY})
        assert denied.error is not None and denied.error.code == -32004

        # /metrics on node-0, through its HTTP port: every call counted once, exactly.
        page = await get(base_url(a) + "/metrics")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
        m = parse_metrics(page.text)
        assert calls_total(m) == {
            ("made", "echo", "ok"): 2, ("made", "add", "ok"): 3, ("made", "fail", "tool_error"): 1,
            ("made", "add", "invalid_arguments"): 1, ("made", OTHER, "unknown_tool"): 1,
            ("forwarded", "add", "ok"): 1, ("served", "echo", "ok"): 1, ("served", "secret", "not_allowed"): 1,
        }
        assert refused(m) == no_refusals(invalid_arguments=1, unknown_tool=1, not_allowed=1)
        assert value(m, "praxis_call_duration_seconds_count", role="made", tool="add", outcome="ok") == 3
        assert value(m, "praxis_call_duration_seconds_bucket", role="made", tool="add", outcome="ok", le="+Inf") == 3
        assert value(m, "praxis_call_duration_seconds_sum", role="made", tool="add", outcome="ok") > 0
        for role in ("made", "served", "forwarded"):
            assert value(m, "praxis_calls_in_flight", role=role) == 0
        assert value(m, "praxis_peers_connected", direction="inbound") == 2  # node-1 and node-2 dialled node-0
        assert value(m, "praxis_peers_connected", direction="outbound") == 0
        # Tool streams of node-0: 4 calls it sent (3 add, 1 fail), 1 it forwarded, 3 it was sent:
        # one request frame and one response frame each.
        assert value(m, "praxis_tool_stream_frames_total", direction="in") == 8
        assert value(m, "praxis_tool_stream_frames_total", direction="out") == 8
        assert value(m, "praxis_tool_stream_bytes_total", direction="in") > 8 * 20
        assert value(m, "praxis_tool_stream_bytes_total", direction="out") > 8 * 20
        assert value(m, "praxis_node_ready") == 1
        assert value(m, "praxis_mesh_tools") == 4
        assert value(m, "praxis_node_info", name="node-0", version=a.config.agent.version, peer_id=a.peer_id) == 1

        # The other two nodes count their side of the same calls.
        mb, mc = parse_metrics(b.mesh.metrics_text().decode()), parse_metrics(c.mesh.metrics_text().decode())
        assert calls_total(mb) == {("served", "add", "ok"): 4}
        assert calls_total(mc) == {("served", "fail", "tool_error"): 1, ("made", "add", "ok"): 1,
                                   ("made", "echo", "ok"): 1, ("made", "secret", "not_allowed"): 1}
        assert refused(mb) == refused(mc) == no_refusals()  # node-0's refusal is node-0's, not node-2's

        # /status on node-0: the node, its peers, the mesh's tools by provider, per-tool calls.
        answer = await get(base_url(a) + "/status")
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
        status = answer.json()
        assert set(status) == {"format", "node", "peers", "tools", "window", "calls", "engines", "recentCalls"}
        assert status["format"] == "praxis-node-status/1"
        node = status["node"]
        assert (node["name"], node["peerId"], node["addrs"], node["ready"], node["tools"]) == \
               ("node-0", a.peer_id, a.addrs, True, ["echo", "secret"])
        assert node["uptimeSeconds"] > 0 and node["startedAt"].endswith("Z")
        peers = {p["peerId"]: p for p in status["peers"]}
        assert set(peers) == {b.peer_id, c.peer_id}
        assert {k: peers[b.peer_id][k] for k in ("name", "direction", "calls", "errors", "tools")} == {
            "name": "node-1", "direction": "inbound", "calls": {"sent": 4, "received": 0},
            "errors": {"sent": 0, "received": 0}, "tools": ["add"]}
        assert {k: peers[c.peer_id][k] for k in ("name", "direction", "calls", "errors", "tools")} == {
            "name": "node-2", "direction": "inbound", "calls": {"sent": 1, "received": 3},
            "errors": {"sent": 1, "received": 1}, "tools": ["fail"]}
        for peer in peers.values():
            assert peer["latencyMs"] > 0 and peer["connectedSeconds"] > 0 and peer["connectedSince"].endswith("Z")
        tools = {t["name"]: t for t in status["tools"]}
        assert {name: [(p["kind"], p["name"]) for p in t["providers"]] for name, t in tools.items()} == {
            "echo": [("local", "node-0")], "secret": [("local", "node-0")],
            "add": [("peer", "node-1")], "fail": [("peer", "node-2")]}
        assert tools["add"]["providers"][0]["peerId"] == b.peer_id
        assert {name: (t["calls"], t["errors"], t["recent"]["calls"], t["recent"]["errors"])
                for name, t in tools.items()} == {
            "echo": (3, 0, 3, 0), "add": (5, 1, 5, 1), "fail": (1, 1, 1, 1), "secret": (1, 1, 1, 1)}
        for t in tools.values():
            assert 0 <= t["recent"]["p50Ms"] <= t["recent"]["p95Ms"]
        assert status["calls"] == {
            "made": {"calls": 8, "errors": 3}, "served": {"calls": 2, "errors": 1},
            "forwarded": {"calls": 1, "errors": 0}, "inFlight": {"made": 0, "served": 0, "forwarded": 0},
            "refused": no_refusals(invalid_arguments=1, unknown_tool=1, not_allowed=1)}
        assert status["window"] == {"seconds": 300, "maxCallsPerTool": 1000}
        assert status["engines"] == {}  # no engine with a queue was created

        health = await get(base_url(a) + "/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "ok", "ready": True})
        figures(f"observability: /metrics of node-0 after 14 calls: {len(m)} samples, {len(page.content)} bytes")

    # The call log: one INFO line per call on every node, with no argument value or result.
    lines = [r.getMessage() for r in caplog.records if r.name == "praxis.calls"]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "praxis.calls")
    assert len(lines) == 11 + 4 + 4, "\n".join(lines)  # node-0: 11 calls, node-1: 4, node-2: 4
    expected = [
        f"call made tool=add caller=mcp provider={b.peer_id} outcome=ok duration_ms=",
        "call made tool=echo caller=mcp provider=local outcome=ok duration_ms=",
        "call made tool=fail caller=mcp provider=- outcome=tool_error duration_ms=",
        "call made tool=nope caller=mcp provider=- outcome=unknown_tool duration_ms=",
        "call made tool=add caller=mcp provider=- outcome=invalid_arguments duration_ms=",
        f"call forwarded tool=add caller={c.peer_id} provider={b.peer_id} outcome=ok duration_ms=",
        f"call served tool=add caller={a.peer_id} provider=local outcome=ok duration_ms=",
        f"call served tool=echo caller={c.peer_id} provider=local outcome=ok duration_ms=",
        f"call served tool=secret caller={c.peer_id} provider=local outcome=not_allowed duration_ms=",
        f"call served tool=fail caller={a.peer_id} provider=local outcome=tool_error duration_ms=",
        f"call made tool=echo caller=node provider={a.peer_id} outcome=ok duration_ms=",
    ]
    for start in expected:
        assert any(line.startswith(start) for line in lines), f"no call log line {start!r}:\n" + "\n".join(lines)
    assert sum(line.startswith(f"call served tool=add caller={a.peer_id} ") for line in lines) == 4
    assert CANARY not in caplog.text
    assert not any(CANARY in r.getMessage() for r in caplog.records)


async def test_off_loopback_every_new_endpoint_needs_the_bearer_token() -> None:
    async with serving_app("node-obs", host="0.0.0.0", token=TOKEN) as (node, base):
        for path in PATHS:
            for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                refused = await get(base + path, Host=REMOTE_HOST, **auth)
                assert refused.status_code == 401, (path, auth, refused.status_code)
                assert refused.headers["www-authenticate"] == "Bearer"
                assert "praxis" not in refused.text and node.peer_id not in refused.text
            # A web page of another origin is refused even with the token.
            page = await get(base + path, Host=REMOTE_HOST, Authorization=f"Bearer {TOKEN}",
                             Origin="http://evil.example")
            assert page.status_code == 403, (path, page.status_code)
        auth = {"Host": REMOTE_HOST, "Authorization": f"Bearer {TOKEN}"}
        health = await get(base + "/healthz", **auth)
        assert (health.status_code, health.json()) == (200, {"status": "ok", "ready": True})
        status = await get(base + "/status", **auth)
        assert status.status_code == 200 and status.json()["node"]["peerId"] == node.peer_id
        metrics = await get(base + "/metrics", **auth)
        assert metrics.status_code == 200
        assert value(parse_metrics(metrics.text), "praxis_node_ready") == 1
        async with httpx2.AsyncClient(timeout=10) as http:
            post = await http.post(base + "/status", headers=auth)
            assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"


async def test_on_loopback_the_new_endpoints_keep_the_host_and_origin_rule() -> None:
    async with serving_app("node-obs", host="127.0.0.1") as (node, base):
        port = base.rsplit(":", 1)[1]
        for path in PATHS:
            assert (await get(base + path, Host="evil.example:80")).status_code == 421, path
            assert (await get(base + path, Host=REMOTE_HOST)).status_code == 421, path
            assert (await get(base + path, Origin="http://evil.example")).status_code == 403, path
            for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
                answer = await get(base + path, Host=host, Origin=f"http://{host}")
                assert answer.status_code == 200, (path, host, answer.status_code)


async def test_healthz_is_503_until_the_bootstrap_peers_were_tried() -> None:
    # A bootstrap "peer" that accepts TCP and then says nothing: the dial hangs until we hang up.
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    silent_peer = ID.from_pubkey(create_new_key_pair().public_key).to_string()
    node = make_node(node_config("node-boot", [], bootstrap=[f"/ip4/127.0.0.1/tcp/{port}/p2p/{silent_peer}"],
                                 mcp={"enabled": True, "port": 0}, limits={"connect_timeout_seconds": 30}))
    async with node.running(), listeners[0]:
        with trio.fail_after(10):
            conn = await listeners[0].accept()  # the node is dialling its bootstrap peer now
        before = await get(base_url(node) + "/healthz")
        assert (before.status_code, before.json()) == (503, {"status": "starting", "ready": False})
        assert value(parse_metrics((await get(base_url(node) + "/metrics")).text), "praxis_node_ready") == 0
        assert (await get(base_url(node) + "/status")).json()["node"]["ready"] is False
        # Hang up and stop listening: this dial and py-libp2p's own retries of it fail at once.
        await listeners[0].aclose()
        await conn.aclose()
        await wait_until(node.mesh.ready, node.dialer.tried_changed)
        after = await get(base_url(node) + "/healthz")
        assert (after.status_code, after.json()) == (200, {"status": "ok", "ready": True})


async def test_a_hostile_peer_cannot_grow_the_label_sets(figures: Any) -> None:
    node = make_node(node_config("node-victim", [py_tool("echo", "echo", ECHO_PARAMS)],
                                 mcp={"enabled": True, "port": 0}))
    async with node.running(), raw_host() as attacker:
        addr = node.addrs[0]
        assert (await call_tool(attacker, addr, "no-such-tool-0", {}))["error"]["code"] == -32601
        assert (await call_tool(attacker, addr, "echo", {"text": "hi"}))["result"]["isError"] is False
        before = parse_metrics((await get(base_url(node) + "/metrics")).text)

        rng = random.Random(11)
        names = [f"t{i}-{rng.getrandbits(64):x}" for i in range(990)]
        names += ["echo@" + "x" * 8, "other", "echo ", "ECHO", "x" * 128, "a@b", "../echo", "echo\n", "é", "*"]
        assert len(set(names)) == 1000
        started = trio.current_time()

        async def caller(mine: list[str]) -> None:
            for n, name in enumerate(mine):
                answer = await call_tool(attacker, addr, name, {"x": 1}, request_id=f"h{n}")
                assert answer["error"]["code"] == -32601, answer

        async with trio.open_nursery() as nursery:
            for k in range(16):
                nursery.start_soon(caller, names[k::16])
        seconds = trio.current_time() - started

        after = parse_metrics((await get(base_url(node) + "/metrics")).text)
        assert set(after) == set(before), f"new series: {sorted(set(after) - set(before))[:5]}"
        assert value(after, "praxis_calls_total", role="served", tool=OTHER, outcome="unknown_tool") == 1001
        assert refused(after)["unknown_tool"] == 1001
        tool_labels = {dict(labels).get("tool") for (_, labels) in after} - {None}
        assert tool_labels == {"echo", OTHER}
        status = (await get(base_url(node) + "/status")).json()
        assert [t["name"] for t in status["tools"]] == ["echo"]
        assert status["calls"]["served"] == {"calls": 1002, "errors": 1001}
        assert status["calls"]["forwarded"] == {"calls": 0, "errors": 0}  # nothing was forwarded

        # Requests the node refuses before they are calls, or for their hops or origin proof:
        # counted by reason, under the same fixed labels.
        stream = await open_stream(attacker, addr, TOOL_PROTOCOL)
        await stream.write(b"{not json\n")
        assert (await read_json(stream))["error"]["code"] == -32600
        stream = await open_stream(attacker, addr, TOOL_PROTOCOL)
        await stream.write(frame({"id": "deep", "name": "echo", "arguments": {"text": "x"}, "hops": 5}))
        assert (await read_json(stream))["error"]["code"] == -32006
        forged = {"peerId": attacker.get_id().to_string(), "target": node.peer_id, "nonce": "0" * 32,
                  "expiresMs": int(time.time() * 1000) + 60_000, "signature": "AAAA"}
        stream = await open_stream(attacker, addr, TOOL_PROTOCOL)
        await stream.write(frame({"id": "forged", "name": "echo", "arguments": {"text": "x"}, "origin": forged}))
        assert (await read_json(stream))["error"]["code"] == -32004
        last = parse_metrics((await get(base_url(node) + "/metrics")).text)
        assert refused(last) == no_refusals(unknown_tool=1001, invalid_request=1, too_many_hops=1, origin_refused=1)
        assert {dict(labels).get("tool") for (_, labels) in last} - {None} == {"echo", OTHER}
    figures(f"observability: 1,000 calls to unknown tools from a raw peer in {seconds:.1f} s: "
            f"{len(after)} samples before and after, no new series")


def test_tool_labels_stay_under_the_cap_and_make_room_for_tools_the_mesh_offers_now() -> None:
    offered = {"a", "b"}
    changed = ChangeSignal()
    forgotten: list[str] = []
    labels = ToolLabels(lambda: offered, changed, forgotten.append, cap=2)
    assert [labels.label(n) for n in ("a", "b", "zz")] == ["a", "b", OTHER]
    offered = {"a", "b", "c"}  # a third tool, but the cap is full of tools still offered
    changed.bump()
    assert labels.label("c") == OTHER and forgotten == []
    offered = {"a", "c"}  # "b" is gone: its label (and its series) make room for "c"
    changed.bump()
    assert labels.label("c") == "c" and forgotten == ["b"]
    assert labels.label("b") == OTHER and labels.used == {"a", "c"}


async def test_a_forgotten_tool_label_takes_its_series_along() -> None:
    offered = {f"t{i}" for i in range(3)}
    changed = ChangeSignal()
    stats = MeshStats(lambda: offered, changed)
    stats.labels.cap = 3
    for name in [*sorted(offered), "t3"]:
        if name == "t3":  # t2 leaves the mesh and t3 comes: t2's series go to make room
            offered = {"t0", "t1", "t3"}
            changed.bump()
        with stats.call("made", name, "node") as record:
            record.failed(Busy("busy"))
    tools = {dict(labels).get("tool") for (_, labels) in parse_metrics(generate_latest(stats.registry).decode())}
    tools -= {None}
    assert tools == {"t0", "t1", "t3"}
    assert stats.tool_summary("t2")["calls"] == 0 and stats.tool_summary("t3")["calls"] == 1


async def test_the_dagger_engines_queue_is_read_from_its_limiter() -> None:
    # node/mesh/stats.py reads the dagger engine's CapacityLimiter through private attributes
    # (LazyEngine._engine, DaggerEngine._limiter); this test fails if they move.
    config = node_config("node-q", [], engines={"dagger": {"max_concurrency": 2}})
    engines = default_engines(config)
    node = Node(config, key_pair=create_new_key_pair(), engines=engines)
    async with node.running():
        assert "dagger" not in node.mesh.status()["engines"]  # not created until a dagger tool runs
        limiter = engines["dagger"]._get()._limiter  # type: ignore[attr-defined]  # created on first use
        await limiter.acquire_on_behalf_of("run-1")
        await limiter.acquire_on_behalf_of("run-2")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(limiter.acquire_on_behalf_of, "queued-1")
            await trio.testing.wait_all_tasks_blocked()
            assert limiter.statistics().tasks_waiting == 1
            assert node.mesh.status()["engines"] == {"dagger": {"queued": 1, "running": 2, "slots": 2}}
            m = parse_metrics(node.mesh.metrics_text().decode())
            assert (value(m, "praxis_engine_queue_length", engine="dagger"),
                    value(m, "praxis_engine_slots_busy", engine="dagger"),
                    value(m, "praxis_engine_slots", engine="dagger")) == (1, 2, 2)
            limiter.release_on_behalf_of("run-1")
        assert json.loads(json.dumps(node.mesh.status()))["engines"]["dagger"]["queued"] == 0
