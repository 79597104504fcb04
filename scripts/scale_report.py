"""Pure helpers of the scale harness: who calls whom, summaries of samples, the printed table."""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from typing import Any

AUTO_FULL_UP_TO = 20  # --sample auto: every pair up to this many nodes, else a sample


def plan_pairs(names: Sequence[str], sample: int, observers: int, rng: random.Random) -> dict[str, list[str]]:
    """caller -> the nodes whose tool it calls (never itself).

    `sample` <= 0 or >= len(names) - 1: every caller calls every other node. Otherwise every
    caller calls `sample` others drawn at random, and the last `observers` callers in `names`
    (the nodes started last) call every other node.
    """
    plan: dict[str, list[str]] = {}
    everyone = list(names)
    full = sample <= 0 or sample >= len(everyone) - 1
    watchers = set(everyone[-observers:]) if observers > 0 else set()
    for caller in everyone:
        others = [n for n in everyone if n != caller]
        plan[caller] = others if full or caller in watchers else sorted(rng.sample(others, sample))
    return plan


def resolve_sample(sample: str, nodes: int) -> int:
    """`--sample`: "auto" (every pair up to AUTO_FULL_UP_TO nodes, else 10), "all", or a count."""
    if sample == "all":
        return 0
    if sample == "auto":
        return 0 if nodes <= AUTO_FULL_UP_TO else 10
    count = int(sample)
    if count < 1:
        raise ValueError("--sample takes auto, all or a positive count")
    return count


def summary(samples: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """count, min, median, p90 and max of samples (None when there are none)."""
    if not samples:
        return {"count": 0, "min": None, "median": None, "p90": None, "max": None}
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"count": len(ordered), "min": round(ordered[0], digits),
            "median": round(statistics.median(ordered), digits),
            "p90": round(p90, digits), "max": round(ordered[-1], digits)}


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.2f}{unit}"
    if isinstance(value, float):
        return f"{int(value)}{unit}"
    return f"{value}{unit}"


def fmt_summary(s: dict[str, Any] | None, unit: str = "") -> str:
    if not s or not s.get("count"):
        return "-"
    return f"median {fmt(s['median'], unit)}, max {fmt(s['max'], unit)} (n={s['count']})"


def table(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows)
    lines = [f"{'figure'.ljust(width)}  value", f"{'-' * width}  {'-' * 40}"]
    lines += [f"{label.ljust(width)}  {value}" for label, value in rows]
    return "\n".join(lines)


def report_rows(figures: dict[str, Any]) -> list[tuple[str, str]]:
    """The printed table of a run's figures (the JSON line has them all)."""
    per = " per node" if figures["mode"] == "processes" else " per node (process / its nodes)"
    conv, idle = figures.get("converge") or {}, figures.get("idle") or {}
    look, rst = figures.get("lookup") or {}, figures.get("restart") or {}
    rows = [
        ("mode / nodes / processes", f"{figures['mode']} / {figures['nodes']} / {figures['processes']}"),
        ("start: first spawn -> last node up", fmt(figures.get("startSeconds"), " s")),
    ]
    if conv and "error" not in conv:
        done = conv.get("seconds")
        rows += [
            ("every node calls every tool (from last up)",
             fmt(done, " s") if done is not None else f"NOT within {fmt(conv.get('timeoutSeconds'), ' s')}"),
            ("  pairs called / ok", f"{conv.get('pairs')} / {conv.get('pairsOk')} ({conv.get('plan')})"),
            ("  first ok per pair", fmt_summary(conv.get("pairSeconds"), " s")),
            ("  calls made (outcomes)", f"{conv.get('calls')} {conv.get('outcomes')}"),
            ("  calls per second (all callers)", fmt(conv.get("callsPerSecond"))),
            ("  harness CPU meanwhile", fmt(conv.get("harnessCpuPercent"), " % of a core")),
            ("  node processes CPU meanwhile", fmt(conv.get("nodesCpuPercent"), " % of a core, all together")),
        ]
    if idle and "error" not in idle:
        rows += [
            ("connections per node (/status peers)", fmt_summary(idle.get("connections"))),
            ("tools each node's /status lists, of " + str(figures["nodes"]),
             fmt_summary(idle.get("toolsKnown")) + (f", min {fmt(idle['toolsKnown'].get('min'))}"
                                                    if (idle.get("toolsKnown") or {}).get("count") else "")),
            ("  the nodes that list the fewest", ", ".join(f"{name} {count}" for name, count
                                                       in (idle.get("fewestTools") or {}).items()) or "-"),
            ("established TCP sockets, /mcp excluded," + per, fmt_summary(idle.get("sockets"))),
            ("  all processes together", fmt(idle.get("socketsTotal"))),
            ("RSS" + per, fmt_summary(idle.get("rssMiB"), " MiB")),
            (f"idle CPU{per} over {fmt(idle.get('windowSeconds'), ' s')}",
             fmt_summary(idle.get("cpuPercent"), " % of a core")),
            ("  all nodes together", fmt(idle.get("cpuPercentTotal"), " % of a core")),
        ]
        if (idle.get("gossipMeshPeers") or {}).get("count"):
            empty = idle.get("gossipMeshEmptyNodes")
            rows.append(("GossipSub mesh peers per node (/metrics)", fmt_summary(idle["gossipMeshPeers"])
                         + f", min {fmt(idle['gossipMeshPeers'].get('min'))}, {idle.get('gossipMeshEmpty')} with none"
                         + (f" ({', '.join(empty)})" if empty else "")))
        rows += [(f"  {key} per second (/metrics)", f"{fmt(rate.get('meshPerSecond'))} in the mesh, per node "
                  + fmt_summary(rate.get("perNodePerSecond")))
                 for key, rate in (idle.get("upkeep") or {}).items() if rate.get("meshPerSecond")]  # zeros: JSON only
    if look and "error" not in look:
        rows.append(("lookup of a new node's tool (ready -> far call ok)", fmt_summary(look.get("seconds"), " s")))
    if rst and "error" not in rst:
        rows += [
            (f"restart of {rst.get('victim')} ({rst.get('how')})",
             f"down {fmt(rst.get('stopSeconds'), ' s')} to stop, {fmt(rst.get('startSeconds'), ' s')} to be up"),
            ("  first caller ok, from its start", fmt(rst.get("firstOkFromStart"), " s")),
            ("  every caller ok, from its start", fmt(rst.get("allOkFromStart"), " s")),
        ]
    for key in ("converge", "idle", "lookup", "restart"):
        if "error" in (figures.get(key) or {}):
            rows.append((f"{key}: FAILED", str(figures[key]["error"])[:300]))
    rows.append(("whole run", fmt(figures.get("runSeconds"), " s")))
    return rows
