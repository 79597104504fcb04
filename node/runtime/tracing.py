"""Traces across hops: W3C trace context carried with every call, spans through the
OpenTelemetry SDK, one tracer provider per node (never the global one: two nodes run in one
process).

Off by default, and then free: with no `tracing.otlp_endpoint` (and no provider given, as
tests give one), the node uses OpenTelemetry's no-op tracer, which records nothing. The
`traceparent` still travels on, so a node that traces sees calls that passed through a node
that does not as one trace.

Where context is read and written:
- in: an MCP client's `_meta.traceparent` (node/mcp/endpoint.py);
- between nodes: the tool request's `traceparent` field (node/mesh/router.py writes it,
  node/mesh/service.py reads it);
- out: `_meta.traceparent` of calls to upstream MCP servers (node/mcp/clients.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import INVALID_SPAN, NoOpTracer, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_PROPAGATOR = TraceContextTextMapPropagator()
_NO_SPAN = nullcontext(INVALID_SPAN)


class Tracing:
    """The spans of one node."""

    def __init__(self, tracer: Tracer | None = None) -> None:
        self.tracer: Tracer = tracer or NoOpTracer()
        self.on = tracer is not None
        self._provider: Any = None  # the SDK provider this node owns (shut down on close)

    @classmethod
    def for_node(cls, name: str, otlp_endpoint: str | None, provider: Any = None) -> Tracing:
        """A node's tracing: the given provider (tests), an OTLP exporter, or nothing."""
        if provider is None and otlp_endpoint is None:
            return cls()
        if provider is None:
            # Imported only when tracing is on: the SDK and the exporter cost nothing otherwise.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            provider = TracerProvider(resource=Resource.create({"service.name": f"praxis-node {name}"}))
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
        tracing = cls(provider.get_tracer("praxis-node"))
        tracing._provider = provider
        return tracing

    def span(self, name: str, kind: SpanKind, *, parent: str | None = None,
             **attributes: Any) -> AbstractContextManager[Span]:
        """A span of this node, child of `parent` (a traceparent) when given, else of the
        current span; an exception marks it failed (its type only: messages may quote data)."""
        valid_parent = parent is not None and TRACEPARENT.match(parent) is not None
        if not self.on and not valid_parent:
            # The no-op tracer would only make the current span current again: skip its cost.
            return _NO_SPAN
        return self._span(name, kind, parent if valid_parent else None, attributes)

    @contextmanager
    def _span(self, name: str, kind: SpanKind, parent: str | None, attributes: dict[str, Any]) -> Iterator[Span]:
        # Off, with a parent: the no-op tracer still makes the parent current, so it travels on.
        ctx = _PROPAGATOR.extract({"traceparent": parent}) if parent is not None else None
        with self.tracer.start_as_current_span(name, context=ctx, kind=kind, attributes=attributes,
                                               record_exception=False, set_status_on_exception=False) as span:
            try:
                yield span
            except BaseException as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, to pass on (None outside any span)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, otel_context.get_current())
    return carrier.get("traceparent")


__all__ = ["SpanKind", "Tracing", "current_traceparent"]
