"""Shared helpers for tests that run real nodes on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from prometheus_client.parser import text_string_to_metric_families

from node.app import Node
from node.config import NodeConfig, parse_config
from node.mesh.router import Router
from node.runtime.signals import ChangeSignal


def py_tool(name: str, func: str, params: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    """A `python` engine tool contract calling tests.sample_tools:<func>."""
    return {"name": name, "engine": "python", "params": params or [],
            "engineSpec": {"callable": f"tests.sample_tools:{func}"}, **extra}


ECHO_PARAMS = [{"name": "text", "type": "string", "required": True}]


def node_config(
    name: str, tools: list[dict[str, Any]] | None = None, bootstrap: list[str] | None = None,
    **sections: Any,
) -> NodeConfig:
    data: dict[str, Any] = {
        "agent": {"name": name, "tools": tools or []},
        "p2p": {"port": 0, "enable_mdns": False, "bootstrap_nodes": bootstrap or [],
                "card_refresh_seconds": 30},
        "mcp": {"enabled": False},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return parse_config(data, env={})


def make_node(config: NodeConfig) -> Node:
    return Node(config, key_pair=create_new_key_pair())

T = TypeVar("T")


async def cancel_once_started(
    call: Callable[[], Awaitable[object]], started: Callable[[], Awaitable[T]]
) -> tuple[T, float]:
    """Run `call` until `started()` returns (its work has begun), then cancel the call.
    Returns what `started` returned and the trio time of the cancel."""
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            found = await started()
            cancelled_at = trio.current_time()
            scope.cancel()
    return found, cancelled_at


async def wait_until(cond: Callable[[], bool], signal: ChangeSignal, timeout: float = 10.0) -> None:
    """Wait, driven by `signal`, until `cond()` holds; fail after `timeout` seconds."""
    with trio.fail_after(timeout):
        while not cond():
            await signal.wait_past(signal.version)


@asynccontextmanager
async def running(*nodes: Node) -> AsyncIterator[list[Node]]:
    async with AsyncExitStack() as stack:
        for node in nodes:
            await stack.enter_async_context(node.running())
        yield list(nodes)


async def start_mesh(
    stack: AsyncExitStack, tools_per_node: list[list[dict[str, Any]]], **first_sections: Any
) -> list[Node]:
    """Start one node per entry; all bootstrap from the first (configured with `first_sections`,
    e.g. `mcp={"enabled": True, "port": 0}`). Returns them running."""
    first = make_node(node_config("node-0", tools_per_node[0], **first_sections))
    await stack.enter_async_context(first.running())
    nodes = [first]
    for i, tools in enumerate(tools_per_node[1:], start=1):
        node = make_node(node_config(f"node-{i}", tools, bootstrap=first.addrs[:1]))
        await stack.enter_async_context(node.running())
        nodes.append(node)
    return nodes


async def wait_all_know(nodes: list[Node], names: set[str], timeout: float = 10.0) -> None:
    for node in nodes:
        def knows_all(router: Router = node.router) -> bool:
            return names <= set(router.tools())

        await wait_until(knows_all, node.directory.changed, timeout)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    """Every sample of a Prometheus text page, parsed by prometheus_client's own parser."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in out, f"duplicate series {key}"
            out[key] = sample.value
    return out


def value(samples: Samples, metric: str, /, **labels: str) -> float:
    return samples[(metric, frozenset(labels.items()))]


def sample(node: Node, name: str, **labels: str) -> float:
    """One sample of the node's `/metrics` page, as scraped (KeyError when there is none)."""
    return value(parse_metrics(node.mesh.metrics_text().decode()), name, **labels)


def counter(node: Node, metric: str, **labels: str) -> float:
    """A counter of the node's `/metrics` page; `metric` is the family's name without `_total`."""
    return sample(node, f"{metric}_total", **labels)
