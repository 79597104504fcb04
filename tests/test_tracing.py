"""Traces across hops (issue 11): each node records its own spans (one OpenTelemetry provider
per node, the SDK's in-memory exporter), and the W3C trace context travels with the call, so a
call through three nodes is one trace, and an MCP client's `_meta.traceparent` is continued."""

from __future__ import annotations

from contextlib import AsyncExitStack

import mcp
from libp2p.crypto.ed25519 import create_new_key_pair
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from node.app import Node
from node.runtime.tracing import Tracing, current_traceparent
from tests.helpers import ECHO_PARAMS, node_config, py_tool, wait_until

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


def traced(config) -> tuple[Node, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Node(config, key_pair=create_new_key_pair(), tracer_provider=provider), exporter


def named(exporter: InMemorySpanExporter, name: str) -> list:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def chain(stack: AsyncExitStack, a_mcp: bool = False):
    """C serves echo; B is connected to C; A is connected to B only."""
    no_px = {"peer_exchange": False, "discovery": False}
    c, c_spans = traced(node_config("c", [py_tool("echo", "echo", ECHO_PARAMS)], p2p=no_px))
    await stack.enter_async_context(c.running())
    b, b_spans = traced(node_config("b", bootstrap=c.addrs[:1], p2p=no_px))
    await stack.enter_async_context(b.running())
    a, a_spans = traced(node_config("a", bootstrap=b.addrs[:1], p2p=no_px, mcp={"enabled": a_mcp, "port": 0}))
    await stack.enter_async_context(a.running())
    await wait_until(lambda: "echo" in b.router.tools(), b.directory.changed)
    await wait_until(lambda: b.peer_id in a.connected_peers(), a.connections)
    assert c.peer_id not in a.connected_peers()
    return (a, a_spans), (b, b_spans), (c, c_spans)


async def test_a_call_through_three_nodes_is_one_trace():
    async with AsyncExitStack() as stack:
        (a, a_spans), (b, b_spans), (c, c_spans) = await chain(stack)
        # A does not offer `echo` nor know it: it asks B, which forwards the call to C.
        response = await a.request_peer(b.peer_id, "echo", {"text": "traced"})
        assert response.result.text_output() == "traced"
    a_call, = named(a_spans, "call echo")
    b_serve, = named(b_spans, "serve echo")
    b_call, = named(b_spans, "call echo")
    c_serve, = named(c_spans, "serve echo")
    hops = [a_call, b_serve, b_call, c_serve]
    assert len({s.context.trace_id for s in hops}) == 1
    for parent, child in zip(hops, hops[1:], strict=False):
        assert child.parent is not None and child.parent.span_id == parent.context.span_id
    assert [s.kind for s in hops] == [SpanKind.CLIENT, SpanKind.SERVER, SpanKind.CLIENT, SpanKind.SERVER]
    assert c_serve.attributes["praxis.caller"] == b.peer_id and a_call.attributes["praxis.peer"] == b.peer_id


async def test_an_mcp_clients_trace_context_is_continued_across_nodes():
    async with AsyncExitStack() as stack:
        b, b_spans = traced(node_config("b", [py_tool("echo", "echo", ECHO_PARAMS)]))
        await stack.enter_async_context(b.running())
        a, a_spans = traced(node_config("a", bootstrap=b.addrs[:1], mcp={"enabled": True, "port": 0}))
        await stack.enter_async_context(a.running())
        await wait_until(lambda: "echo" in a.router.tools(), a.directory.changed)
        async with mcp.Client(a.mcp_url, mode="legacy") as client:
            result = await client.call_tool("echo", {"text": "hi"},
                                            meta={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
            assert result.content[0].text == "hi"  # type: ignore[union-attr]
    a_entry, = named(a_spans, "mcp call echo")
    a_call, = named(a_spans, "call echo")
    b_serve, = named(b_spans, "serve echo")
    assert {format(s.context.trace_id, "032x") for s in (a_entry, a_call, b_serve)} == {CLIENT_TRACE}
    assert a_entry.parent is not None and format(a_entry.parent.span_id, "016x") == CLIENT_SPAN
    assert b_serve.parent is not None and b_serve.parent.span_id == a_call.context.span_id


async def test_tracing_off_records_nothing_and_passes_the_context_on():
    tracing = Tracing()  # no provider, no endpoint: OpenTelemetry's no-op tracer
    parent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    with tracing.span("x", SpanKind.SERVER, parent=parent) as span:
        assert not span.is_recording()
        assert current_traceparent() == parent  # a node that does not trace still passes it on
