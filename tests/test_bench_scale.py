"""The scale harness's own parsing and planning (scripts/scale_*.py): /proc texts, MCP answers,
the call plan and the config overrides, and one packed worker process starting nodes. The harness
itself is a benchmark, run by hand."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import trio
from prometheus_client import CollectorRegistry, generate_latest

from node.mesh.activity import FAMILIES, ActivityCollector, MeshActivity

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from scale_fleet import NodeSpec, PackedFleet, merged, parse_overrides, write_node  # noqa: E402
from scale_probe import (  # noqa: E402
    OK,
    TOOL_ERROR,
    UNKNOWN_TOOL,
    WRONG_RESULT,
    answer_to,
    classify,
    connections_from_metrics,
    connections_from_status,
    sse_messages,
    upkeep_from_metrics,
)
from scale_procfs import CLOCK_TICKS, established_inodes, parse_stat_cpu, parse_status_rss  # noqa: E402
from scale_report import plan_pairs, report_rows, resolve_sample, summary  # noqa: E402


def test_stat_cpu_counts_fields_after_a_command_name_with_spaces_and_parentheses() -> None:
    fields = ["S", "1", "2", "3", "0", "-1", "4194304", "10", "0", "0", "0", "250", "50"] + ["0"] * 39
    text = f"1234 (python3 (x) y) {' '.join(fields)}\n"
    assert parse_stat_cpu(text) == pytest.approx(300 / CLOCK_TICKS)


def test_status_rss_in_bytes_and_none_for_a_zombie() -> None:
    assert parse_status_rss("Name:\tpython3\nVmRSS:\t  131072 kB\nThreads:\t3\n") == 131072 * 1024
    assert parse_status_rss("Name:\tpython3\nState:\tZ (zombie)\n") is None


def test_established_inodes_only_state_01() -> None:
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    listen = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0  0 111 1 0 100 0 0 10 0\n"
    est = "   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  0  0 222 1 0 20 4 30 10 -1\n"
    assert established_inodes([header + listen + est, header]) == {222: 0x1F90}


def test_sse_answer_found_after_notifications() -> None:
    body = (": ping\n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n"
            "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"content\":[]}}\r\n\r\n")
    messages = sse_messages(body)
    assert len(messages) == 2
    assert answer_to(messages, 7) == {"jsonrpc": "2.0", "id": 7, "result": {"content": []}}
    assert answer_to(messages, 8) is None


def test_classify_call_answers() -> None:
    def result(text: str, is_error: bool = False) -> dict[str, object]:
        return {"id": 1, "result": {"content": [{"type": "text", "text": text}], "isError": is_error}}

    assert classify(result("n07"), "n07", 0.1).kind == OK
    assert classify(result("n08"), "n07", 0.1).kind == WRONG_RESULT
    assert classify(result("peer unreachable", True), "n07", 0.1).kind == TOOL_ERROR
    unknown = {"id": 1, "error": {"code": -32602, "message": "unknown tool 'who_n07'"}}
    assert classify(unknown, "n07", 0.1).kind == UNKNOWN_TOOL


def test_connections_from_status_and_metrics() -> None:
    assert connections_from_status({"peers": [{}, {}, {}]}) == 3
    assert connections_from_status({"format": "other"}) is None
    metrics = ('# HELP praxis_peers_connected Peers\npraxis_peers_connected{direction="inbound"} 4.0\n'
               'praxis_peers_connected{direction="outbound"} 3.0\npraxis_peers_connected_total 9\n')
    assert connections_from_metrics(metrics) == 7
    assert connections_from_metrics("up 1\n") is None


def test_upkeep_counters_read_from_the_page_a_node_serves() -> None:
    activity = MeshActivity()
    registry = CollectorRegistry()
    registry.register(ActivityCollector(activity))
    activity.connections_opened["inbound"] += 3
    activity.announcements["applied"] += 5
    upkeep = upkeep_from_metrics(generate_latest(registry).decode())
    assert upkeep is not None and upkeep.gossip_mesh is None  # no such gauge on this page
    counts = upkeep.counts
    assert counts["connections_opened.inbound"] == 3 and counts["announcements.applied"] == 5
    assert counts["dht_walks.lookup"] == 0  # exported before the first bump
    assert len(counts) == sum(len(values) for *_, values in FAMILIES)
    assert upkeep_from_metrics("up 1\n") is None and upkeep_from_metrics(None) is None


def test_gossip_mesh_size_read_from_metrics() -> None:
    page = ("# TYPE praxis_gossip_mesh_peers gauge\npraxis_gossip_mesh_peers 3.0\n"
            '# TYPE praxis_dht_walks_total counter\npraxis_dht_walks_total{purpose="lookup"} 2.0\n')
    upkeep = upkeep_from_metrics(page)
    assert upkeep is not None and upkeep.gossip_mesh == 3 and upkeep.counts == {"dht_walks.lookup": 2}


def test_plan_every_pair_or_a_sample_with_observers() -> None:
    names = [f"n{i}" for i in range(10)]
    full = plan_pairs(names, 0, 3, random.Random(1))
    assert all(sorted(t) == sorted(set(names) - {c}) for c, t in full.items())
    sampled = plan_pairs(names, 2, 3, random.Random(1))
    for caller, targets in sampled.items():
        assert caller not in targets
        assert len(targets) == (9 if caller in {"n7", "n8", "n9"} else 2)
    assert resolve_sample("auto", 20) == 0 and resolve_sample("auto", 21) == 10 and resolve_sample("5", 9) == 5
    with pytest.raises(ValueError):
        resolve_sample("0", 9)


def test_overrides_nest_and_merge_into_the_config() -> None:
    overrides = parse_overrides(["limits.max_connections_per_ip=64", "p2p.peer_exchange=false",
                                 "p2p.bootstrap_nodes=[]"])
    assert overrides == {"limits": {"max_connections_per_ip": 64}, "p2p": {"peer_exchange": False,
                                                                         "bootstrap_nodes": []}}
    base = {"p2p": {"port": 0, "bootstrap_nodes": ["/ip4/127.0.0.1/tcp/1/p2p/x"]}}
    assert merged(base, overrides)["p2p"] == {"port": 0, "bootstrap_nodes": [], "peer_exchange": False}
    for bad in ("limits=3", "nokey", "a..b=1"):
        with pytest.raises(ValueError):
            parse_overrides([bad])


def test_summary() -> None:
    assert summary([]) == {"count": 0, "min": None, "median": None, "p90": None, "max": None}
    assert summary([3.0, 1.0, 2.0]) == {"count": 3, "min": 1.0, "median": 2.0, "p90": 3.0, "max": 3.0}


def test_report_rows_show_a_failed_phase_and_skip_its_figures() -> None:
    figures = {"mode": "packed", "nodes": 4, "processes": 2, "startSeconds": 1.5, "runSeconds": 9.0,
               "converge": {"seconds": None, "timeoutSeconds": 60.0, "pairs": 12, "pairsOk": 10},
               "restart": {"error": "RuntimeError: n2: port in use"}}
    rows = dict(report_rows(figures))
    assert rows["every node calls every tool (from last up)"] == "NOT within 60 s"
    assert rows["restart: FAILED"] == "RuntimeError: n2: port in use"
    assert not any(label.startswith("restart of") for label in rows)


def test_report_rows_name_the_nodes_that_know_fewest_tools_and_hear_no_announcement() -> None:
    summary_of_known = {"count": 3, "min": 1, "median": 3, "p90": 3, "max": 3}
    figures = {"mode": "packed", "nodes": 3, "processes": 1,
               "idle": {"toolsKnown": summary_of_known, "fewestTools": {"n2": 1, "n0": 3},
                        "gossipMeshPeers": {"count": 3, "min": 0, "median": 1, "p90": 1, "max": 1},
                        "gossipMeshEmpty": 1, "gossipMeshEmptyNodes": ["n2"]}}
    rows = dict(report_rows(figures))
    assert rows["  the nodes that list the fewest"] == "n2 1, n0 3"
    assert rows["GossipSub mesh peers per node (/metrics)"].endswith("1 with none (n2)")


async def test_a_packed_worker_starts_nodes_asked_for_at_once(tmp_path: Path) -> None:
    """Several nodes started at the same time on one worker process (as `--start-parallel` does):
    their commands share the worker's stdin and must not interleave."""
    specs = [NodeSpec(f"n{i}", tmp_path / f"n{i}") for i in range(3)]
    for spec in specs:
        write_node(spec, [], {"p2p": {"discovery": False}})
    async with trio.open_nursery() as background:
        fleet = PackedFleet(1, tmp_path, start_timeout=60, log_level="WARNING")
        try:
            await fleet.open(background)
            async with trio.open_nursery() as starting:
                for spec in specs:
                    starting.start_soon(fleet.start, spec)
            assert {spec.pid for spec in specs} == set(fleet.processes())
            assert sorted(fleet.processes()[specs[0].pid]) == [spec.name for spec in specs]
            assert all(spec.mcp_url.startswith("http://127.0.0.1:") for spec in specs)
        finally:
            await fleet.aclose()
