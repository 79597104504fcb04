"""Issue 8, findings 6 and 10: hostile cards from a raw libp2p peer against a real node.

- A huge card (182,324 tools in 3.8 MiB, under the 4 MiB frame limit, as in the finding), or
  one just over any per-card bound (tools, description, schema size and depth, parameters,
  the 1 MiB card size), is refused: the node ends the stream, says so in its log, never
  stores the card, stays cheap in memory, and a good peer's calls still succeed. A card at
  each bound is stored, so the refusals are the bounds' doing.
- One identity pushing its card over and over: past `limits.max_card_pushes_per_minute`
  (default 12) the node ends the stream without writing its own card and logs the refusal
  once; a good peer still exchanges cards and calls.
- Card, tool and parameter names with line breaks or control characters are refused, and no
  peer-chosen string (those names, or a tool name in a request, which the node does log)
  forges a line in a node process's log (node.log).
"""

from __future__ import annotations

import json
import logging
import re
import resource
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

import trio
from libp2p.abc import INetStream
from libp2p.host.exceptions import StreamFailure
from libp2p.network.stream.exceptions import StreamError
from libp2p.protocol_muxer.exceptions import MultiselectClientError
from libp2p.stream_muxer.exceptions import MuxedStreamError

from node.runtime.signals import ChangeSignal
from protocols.card import CARD_PROTOCOL
from protocols.tool import TOOL_PROTOCOL
from tests.helpers import ECHO_PARAMS, make_node, node_config, py_tool, wait_all_know, wait_until
from tests.processes import node_process, write_config
from tests.raw_peer import frame, open_stream, raw_host, read_json

MIB = 1024 * 1024
HUGE_TOOLS = 182_324  # the card of the finding: 182,324 tools in 3.9 MiB
PUSHES = 20  # card pushes by one identity, well past the default limit
PUSH_LIMIT = 12  # limits.max_card_pushes_per_minute, default (not lowered here)
END_WAIT = 10.0  # how long the node may take to end a card stream


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the next peak is this test's own."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def memory_kib() -> dict[str, int]:
    """VmHWM (peak RSS) and VmRSS of this process (which runs the target node), in KiB."""
    values = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0])
    return values


def card(peer_id: str, tools: list[dict[str, Any]], name: str = "attacker", **extra: Any) -> bytes:
    return frame({"name": name, "version": "1", "peerId": peer_id, "capabilities": ["tools"],
                  "tools": tools, "timestamp": 1700000000000, **extra})


def huge_card(peer_id: str) -> bytes:
    """The finding's card, built as bytes (no 182k dicts in this process's memory)."""
    tools = b",".join(b'{"name":"tool%06d"}' % i for i in range(HUGE_TOOLS))
    head = json.dumps({"name": "attacker", "peerId": peer_id}, separators=(",", ":"))[:-1].encode()
    return head + b',"tools":[' + tools + b"]}\n"


async def read_to_end(stream: INetStream, timeout: float) -> tuple[bytes, bool]:
    """Everything the node writes on the stream, and whether it ended the stream (closed or
    reset; py-libp2p's yamux may report either as an end of stream) within `timeout`."""
    data = bytearray()
    with trio.move_on_after(timeout):
        try:
            while True:
                chunk = await stream.read(65536)
                if not chunk:
                    return bytes(data), True
                data += chunk
        except (StreamError, MuxedStreamError):  # EOF, reset, or "error" after a cut write
            return bytes(data), True
    return bytes(data), False


async def push_card(host, addr: str, payload: bytes) -> tuple[bytes, bool]:
    """Open a card stream, write `payload` (a reset may cut the write), read until the node
    ends the stream. Returns what the node wrote and whether it ended the stream in time.

    A stream the node resets at once may already fail while being opened (the reset overtakes
    the protocol negotiation's answer): that is a stream ended without a byte of a card."""
    try:
        stream = await open_stream(host, addr, CARD_PROTOCOL)
    except (StreamFailure, MultiselectClientError):
        return b"", True
    with trio.fail_after(END_WAIT):
        try:
            await stream.write(payload)
        except (StreamError, MuxedStreamError):  # the node reset the stream while we wrote
            pass
    return await read_to_end(stream, END_WAIT)


class LogWatch(logging.Handler):
    """The messages of one logger, with a signal bumped on each (the node logs in this thread)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []
        self.changed = ChangeSignal()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.changed.bump()


@contextmanager
def watching(logger_name: str = "praxis.node") -> Iterator[LogWatch]:
    logger = logging.getLogger(logger_name)
    watch, level = LogWatch(), logger.level
    logger.addHandler(watch)
    logger.setLevel(logging.INFO)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)
        logger.setLevel(level)


def card_verdicts(watch: LogWatch, peer_id: str) -> list[str]:
    """What the node said about each card `peer_id` pushed: "refused" or "stored"."""
    verdicts = []
    for message in watch.messages:
        if f"card exchange with {peer_id} failed" in message:
            verdicts.append("refused")
        elif f"({peer_id}) offers" in message:
            verdicts.append("stored")
    return verdicts


async def next_verdict(watch: LogWatch, peer_id: str, seen: int = 0, timeout: float = END_WAIT) -> str:
    """Wait until the node has judged one more card of `peer_id` than `seen`; return that verdict.

    (On this stack a reset after the node's own card reaches the pusher as a plain end of
    stream, so the node's log says whether a card was refused or stored.)"""
    await wait_until(lambda: len(card_verdicts(watch, peer_id)) > seen, watch.changed, timeout)
    return card_verdicts(watch, peer_id)[seen]


async def test_huge_card_is_refused_cheaply_and_a_good_peer_is_still_served(figures):
    target = make_node(node_config("target", [py_tool("echo", "echo", ECHO_PARAMS)]))
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(target.running())
        good = make_node(node_config("good", bootstrap=target.addrs[:1]))
        await stack.enter_async_context(good.running())
        await wait_all_know([good], {"echo"})
        watch = stack.enter_context(watching())
        attacker = await stack.enter_async_context(raw_host())
        attacker_id = attacker.get_id().to_string()
        payload = huge_card(attacker_id)  # built before measuring: only the node's cost counts
        assert 3.8 * MIB < len(payload) < 4 * MIB  # under the 4 MiB frame limit, as in the finding

        peak_reset = reset_peak_rss()
        before = memory_kib()
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        started = trio.current_time()
        _, ended = await push_card(attacker, target.addrs[0], payload)
        verdict = await next_verdict(watch, attacker_id, timeout=30)
        judged_after = trio.current_time() - started
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
        after = memory_kib()

        routed = await good.call("echo", {"text": "after the huge card"}, timeout=10)
        # The peak while the card was handled, above the RSS before it (or, when the peak could
        # not be reset, above the earlier peak: a lower bound of the growth).
        growth_mib = (after["VmHWM"] - before["VmRSS" if peak_reset else "VmHWM"]) / 1024
        cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
        figures(f"hostile cards: huge card ({HUGE_TOOLS:,} tools, {len(payload) / MIB:.2f} MiB) {verdict} "
                f"after {judged_after:.2f} s, {cpu:.2f} s CPU in this process (node + attacker); "
                f"RSS {before['VmRSS'] / 1024:.0f} MiB before, peak (VmHWM) {after['VmHWM'] / 1024:.0f} MiB "
                f"during (growth {growth_mib:.1f} MiB{'' if peak_reset else ', peak not reset'}), "
                f"{after['VmRSS'] / 1024:.0f} MiB after")

        assert ended, "the node did not end the huge card's stream"
        assert verdict == "refused", f"the huge card was {verdict}"
        assert target.directory.get(attacker_id) is None
        assert "tool000000" not in target.router.tools()
        assert routed.result.text_output() == "after the huge card" and not routed.result.is_error
        assert growth_mib < 100, f"peak RSS grew by {growth_mib:.0f} MiB for one card"


def schema_of_depth(depth: int) -> dict[str, Any]:
    """A schema whose JSON nesting depth is exactly `depth` (each dict counts one level)."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth - 1):
        schema = {"not": schema}
    return schema


def schema_of_bytes(size: int) -> dict[str, Any]:
    """An object schema whose compact JSON is exactly `size` bytes."""
    base = {"type": "object", "description": ""}
    filler = size - len(json.dumps(base, separators=(",", ":")))
    return {"type": "object", "description": "d" * filler}


# (what, tools at the bound: accepted, tools just over it: refused)
BOUNDS: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]] = [
    ("tools per card (256)", [{"name": f"t{i}"} for i in range(256)], [{"name": f"t{i}"} for i in range(257)]),
    ("description (4096 chars)", [{"name": "desc", "description": "d" * 4096}],
     [{"name": "desc", "description": "d" * 4097}]),
    ("schema size (64 KiB)", [{"name": "big", "inputSchema": schema_of_bytes(64 * 1024)}],
     [{"name": "big", "inputSchema": schema_of_bytes(65 * 1024)}]),
    ("schema depth (32)", [{"name": "deep", "inputSchema": schema_of_depth(32)}],
     [{"name": "deep", "inputSchema": schema_of_depth(33)}]),
    ("card size (1 MiB), every tool within its bounds",
     [{"name": f"s{i}", "inputSchema": schema_of_bytes(60 * 1024)} for i in range(16)],
     [{"name": f"s{i}", "inputSchema": schema_of_bytes(60 * 1024)} for i in range(18)]),
    ("parameters per tool (64)", [{"name": "wide", "parameters": [{"name": f"p{i}"} for i in range(64)]}],
     [{"name": "wide", "parameters": [{"name": f"p{i}"} for i in range(65)]}]),
]


async def test_cards_just_over_each_bound_are_refused_and_at_the_bound_accepted(figures):
    target = make_node(node_config("target", [py_tool("echo", "echo", ECHO_PARAMS)]))
    outcomes: list[str] = []
    over: dict[str, tuple[str, bool]] = {}
    at: dict[str, tuple[str, bool]] = {}
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(target.running())
        good = make_node(node_config("good", bootstrap=target.addrs[:1]))
        await stack.enter_async_context(good.running())
        await wait_all_know([good], {"echo"})
        watch = stack.enter_context(watching())
        addr = target.addrs[0]
        for what, at_bound, over_bound in BOUNDS:
            # Over the bound: a fresh identity each time (no push limit involved).
            async with raw_host() as attacker:
                attacker_id = attacker.get_id().to_string()
                payload = card(attacker_id, over_bound)
                _, ended = await push_card(attacker, addr, payload)
                assert ended, f"{what}: the node did not end the stream of a card over the bound"
                verdict = await next_verdict(watch, attacker_id)
                over[what] = (verdict, target.directory.get(attacker_id) is not None)
                outcomes.append(f"{what}: over the bound ({len(payload) / 1024:.0f} KiB) {verdict}")
                routed = await good.call("echo", {"text": what}, timeout=10)
                assert routed.result.text_output() == what and not routed.result.is_error

            # At the bound: stored, so the refusal above is the bound's doing and nothing else's.
            async with raw_host() as honest:
                honest_id = honest.get_id().to_string()
                payload = card(honest_id, at_bound)
                data, ended = await push_card(honest, addr, payload)
                assert ended and json.loads(data.split(b"\n", 1)[0])["peerId"] == target.peer_id
                verdict = await next_verdict(watch, honest_id)
                entry = target.directory.get(honest_id)
                at[what] = (verdict, entry is not None and len(entry.tools) == len(at_bound))
                outcomes.append(f"at the bound ({len(payload) / 1024:.0f} KiB) {verdict}")
    figures("hostile cards: " + "; ".join(outcomes))
    assert over == dict.fromkeys(over, ("refused", False)), f"cards over a bound (verdict, stored): {over}"
    assert at == dict.fromkeys(at, ("stored", True)), f"cards at a bound (verdict, stored whole): {at}"
    assert len(over) == len(at) == len(BOUNDS)


async def test_card_push_flood_is_refused_past_the_limit_and_logged_once(caplog, figures):
    caplog.set_level(logging.INFO, logger="praxis.node")
    target = make_node(node_config("target", [py_tool("echo", "echo", ECHO_PARAMS)]))
    assert target.config.limits.max_card_pushes_per_minute == PUSH_LIMIT  # the default, as deployed
    answered: list[int] = []
    refused: list[int] = []
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(target.running())
        attacker = await stack.enter_async_context(raw_host())
        attacker_id = attacker.get_id().to_string()
        started = trio.current_time()
        with trio.fail_after(50):  # every push inside one minute, or the test would prove nothing
            for i in range(PUSHES):
                tools = [{"name": f"flood{i}_{j}", "description": "x" * 200} for j in range(64)]
                data, ended = await push_card(attacker, target.addrs[0], card(attacker_id, tools))
                assert ended, f"push {i}: the node did not end the stream"
                if data:  # the node wrote its card: an exchange
                    assert json.loads(data.split(b"\n", 1)[0])["peerId"] == target.peer_id
                    answered.append(i)
                else:  # ended without a byte: refused unread
                    refused.append(i)
        flood_secs = trio.current_time() - started
        assert answered == list(range(PUSH_LIMIT)), f"pushes the node answered: {answered}"
        assert refused == list(range(PUSH_LIMIT, PUSHES)), f"pushes the node refused: {refused}"
        # The node holds the last card it took, not a later one.
        await wait_until(lambda: target.directory.get(attacker_id) is not None
                         and f"flood{PUSH_LIMIT - 1}_0" in target.directory.get(attacker_id).tools,
                         target.directory.changed)

        # A good peer, meanwhile: exchanges cards both ways and calls.
        good = make_node(node_config("good", bootstrap=target.addrs[:1]))
        await stack.enter_async_context(good.running())
        await wait_all_know([good], {"echo"})
        await wait_until(lambda: target.directory.get(good.peer_id) is not None, target.directory.changed)
        routed = await good.call("echo", {"text": "after the flood"}, timeout=10)
        assert routed.result.text_output() == "after the flood" and not routed.result.is_error
        assert f"flood{PUSH_LIMIT - 1}_0" in target.directory.get(attacker_id).tools

    refusals = [r for r in caplog.records
                if r.name == "praxis.node" and "pushes its card more than" in r.getMessage()]
    figures(f"hostile cards: one identity pushed its card {PUSHES} times in {flood_secs:.2f} s: "
            f"{len(answered)} answered, {len(refused)} ended unread, refusal logged {len(refusals)} time(s)")
    assert len(refusals) == 1, [r.getMessage() for r in refusals]
    assert attacker_id in refusals[0].getMessage()


# ----- log forging, against a node process and its node.log --------------------------------

NODE_NAME = "victim"
# A forged line written exactly as the node writes its own (see node/cli/logs.py).
FORGED = f"2026-01-01T12:00:00.000Z INFO    [{NODE_NAME}] praxis.node: forged"
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) +\["
                  + NODE_NAME + r"\] [\w.]+: ")
ECHO = {"name": "echo", "engine": "python", "engineSpec": {"callable": "tests.sample_tools:echo"},
        "params": [{"name": "text", "type": "string", "required": True}]}


def verdicts_in(text: str, peer_id: str) -> list[str]:
    """The node's verdicts on `peer_id`'s cards, in order, as node.log tells them."""
    verdicts = []
    for line in text.split("\n"):
        if f"card exchange with {peer_id} failed" in line:
            verdicts.append("refused")
        elif f"({peer_id}) offers" in line:
            verdicts.append("stored")
    return verdicts


async def wait_for_log(path: Path, done: Callable[[str], bool], timeout: float = 10.0) -> str:
    """Poll another process's log file until `done(text)`; fail after `timeout` seconds."""
    with trio.fail_after(timeout):
        while True:
            text = path.read_text(encoding="utf-8", errors="replace")
            if done(text):
                return text
            await trio.sleep(0.05)


async def test_peer_strings_cannot_forge_log_lines(tmp_path, figures):
    config = write_config(tmp_path / "victim", NODE_NAME, [ECHO], [])
    log_path = config.parent / "node.log"
    verdicts: dict[str, str] = {}
    async with node_process(config) as (_, ready), raw_host() as attacker:
        addr = ready["addrs"][0]
        attacker_id = attacker.get_id().to_string()
        hostile_cards = {
            "a newline in a tool name": card(attacker_id, [{"name": f"echo\n{FORGED} by tool name"}]),
            "a newline in the card name": card(attacker_id, [{"name": "ok"}], name=f"x\n{FORGED} by card name"),
            "control characters in names": card(attacker_id, [{"name": "e\x1b[2K\rcho"}], name="x\u2028y\x85z"),
            "a newline in a parameter name": card(attacker_id, [{"name": "p", "parameters": [
                {"name": f"a\n{FORGED} by parameter", "type": "string"}]}]),
        }
        for i, (what, payload) in enumerate(hostile_cards.items()):
            _, ended = await push_card(attacker, addr, payload)
            assert ended, f"card with {what}: the node did not end the stream"
            text = await wait_for_log(log_path, lambda t, n=i: len(verdicts_in(t, attacker_id)) > n)
            verdicts[what] = verdicts_in(text, attacker_id)[i]

        # A string that does reach a log message: a call to an unknown tool is logged with its
        # name (the call log: "call served tool=%s caller=%s ..."); the node logs it before it answers.
        request = {"id": "forge-1", "name": f"nope\n{FORGED} by tool request", "arguments": {},
                   "timestamp": 1700000000000}
        stream = await open_stream(attacker, addr, TOOL_PROTOCOL)
        await stream.write(frame(request))
        response = await read_json(stream, timeout=10)
        assert response["id"] == "forge-1" and response["result"]["isError"] is True
        text = await wait_for_log(log_path, lambda t: "by tool request" in t)

    lines = text.split("\n")
    assert lines[-1] == "", "node.log does not end with a newline"
    lines = lines[:-1]
    figures(f"hostile cards: node.log of the victim process: {len(lines)} lines after {len(hostile_cards)} "
            f"hostile cards ({', '.join(sorted(set(verdicts.values())))}) and 1 tool request with a forged "
            f"name; {sum('forged' in line for line in lines)} line(s) mention the forgery")
    for line in lines:
        for at in [m.start() for m in re.finditer(re.escape(FORGED), line)]:
            assert line[at - 2:at] == "\\n", f"a forged line in node.log: {line!r}"
        assert line.count("forged") == line.count(f"\\n{FORGED}"), f"an unescaped forgery in node.log: {line!r}"
    strays = [line for line in lines if not LINE.match(line)]
    assert not strays, "node.log lines not written by the node's formatter:\n" + "\n".join(strays[:10])
    assert any(f"call served tool=nope\\n{FORGED} by tool request caller={attacker_id} " in line
               and "outcome=unknown_tool" in line for line in lines), \
        "the refused call was not logged, escaped"
    for bad in ("\x1b", "\r", "\u2028", "\x85"):
        assert bad not in text, f"{bad!r} reached node.log"
    assert verdicts == dict.fromkeys(hostile_cards, "refused"), verdicts
