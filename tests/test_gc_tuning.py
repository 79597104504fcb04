"""A node process keeps CPython's cyclic garbage collector out of its way
(node/runtime/gc_tuning.py), as its `/metrics` shows: a `praxis-node run` process on 127.0.0.1
serving calls through its MCP endpoint."""

from __future__ import annotations

from pathlib import Path

import httpx
import mcp
import trio

from tests.helpers import parse_metrics, py_tool, value
from tests.processes import node_process, write_config

CALLS = 200
# Young collections the node may make for them: 0 measured; 31 with the interpreter's thresholds.
AT_MOST = 4


async def young_collections(http: httpx.AsyncClient, metrics_url: str) -> float:
    response = await http.get(metrics_url)
    response.raise_for_status()
    return value(parse_metrics(response.text), "python_gc_collections_total", generation="0")


async def test_a_node_process_serves_calls_with_few_young_collections(tmp_path: Path) -> None:
    config = write_config(tmp_path / "node", "gc-node", [py_tool("noop", "noop")], [],
                          mcp={"enabled": True, "port": 0})
    async with node_process(config) as (_, ready), httpx.AsyncClient(trust_env=False) as http:
        metrics_url = ready["mcpUrl"].removesuffix("/mcp") + "/metrics"
        with trio.fail_after(60):
            async with mcp.Client(ready["mcpUrl"], mode="legacy") as client:
                await client.call_tool("noop", {})  # the session and the tool's first call are set up
                before = await young_collections(http, metrics_url)
                for _ in range(CALLS):
                    assert not (await client.call_tool("noop", {})).is_error
                after = await young_collections(http, metrics_url)
    assert after - before <= AT_MOST, f"{after - before:g} young collections for {CALLS} calls"
