"""A peer's input schema is data (node/mcp/schemas.py): checking arguments against it fetches nothing,
reads nothing, runs none of its regexes and takes bounded time; and end to end, a peer whose card
carries a remote `$ref` cannot make the node send a request or stall it.

Only 127.0.0.1 is ever connected to. The "remote" schema host is a TCP listener in a thread of
this process that accepts, records and never answers; it runs outside the event loop so it sees
a connection even while a blocking fetch holds the loop, and it closes what it accepted after
HOLD seconds, so that code which does fetch fails these tests instead of hanging them.
"""

from __future__ import annotations

import gc
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

import mcp
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from libp2p.abc import INetStream

from node.mcp.schemas import MAX_SCHEMA_BYTES, MAX_SCHEMA_DEPTH, schema_problem
from node.mesh.host import parse_peer_addr
from protocols.card import CARD_PROTOCOL
from protocols.errors import PraxisError
from protocols.tool import TOOL_PROTOCOL
from tests.helpers import ECHO_PARAMS, make_node, node_config, py_tool, wait_all_know, wait_until
from tests.raw_peer import frame, raw_host, read_line

HOLD = 5.0  # seconds the listener keeps an accepted connection before closing it
PROMPT = 1.0  # CPU seconds a check may cost: far above what one costs, far below the regex below
EVIL = "(a+)+$"  # exponential backtracking on the text below
EVIL_TEXT = "a" * 25 + "!"  # about 3 s of re.search on this machine; each extra "a" doubles it


class SilentListener:
    """A TCP listener on 127.0.0.1 that accepts connections, records them and never answers."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.05)
        self.port = self.server.getsockname()[1]
        self.connected = threading.Event()
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def url(self, path: str = "/schema.json") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _run(self) -> None:
        held: list[tuple[socket.socket, float]] = []
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                pass
            else:
                self.accepted += 1
                self.connected.set()
                held.append((conn, time.monotonic()))
            for conn, since in [h for h in held if time.monotonic() - h[1] > HOLD]:
                conn.close()
                held.remove((conn, since))
        for conn, _ in held:
            conn.close()

    def __enter__(self) -> SilentListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.close()


def timed(schema: dict[str, Any], arguments: Any) -> tuple[str | None, float]:
    """The check's problem and its cost: the CPU time of this thread, with garbage collection held
    off (on a busy machine a collection of this whole test process can take a second and more,
    and the wall clock counts the other processes' turns). A wait costs no CPU: it is bounded on
    the wall clock, below what a fetch of a SilentListener (HOLD s) or a DNS timeout takes."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        wall, cpu = time.monotonic(), time.thread_time()
        problem = schema_problem(schema, arguments)
        cpu, wall = time.thread_time() - cpu, time.monotonic() - wall
    finally:
        if collecting:
            gc.enable()
    assert wall < HOLD, f"the check waited {wall:.1f} s"
    return problem, cpu


@contextmanager
def regexes_recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every pattern given to the `re` module's functions while the block runs."""
    seen: list[str] = []
    for name in ("search", "match", "fullmatch", "compile", "findall", "finditer", "sub"):
        original: Callable[..., Any] = getattr(re, name)

        def spy(pattern: Any, *args: Any, _original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            seen.append(pattern if isinstance(pattern, str) else getattr(pattern, "pattern", ""))
            return _original(pattern, *args, **kwargs)

        monkeypatch.setattr(re, name, spy)
    yield seen
    monkeypatch.undo()


# ----- no reference leaves the document -------------------------------------------------------

def test_a_remote_ref_is_never_fetched() -> None:
    with SilentListener() as listener:
        schemas: list[dict[str, Any]] = [
            {"type": "object", "properties": {"x": {"$ref": listener.url()}}},
            {"$ref": listener.url("/root.json#/$defs/a")},
            # A relative ref against an `$id` naming the listener.
            {"$id": listener.url("/base/"), "properties": {"x": {"$ref": "other.json"}}},
            {"properties": {"x": {"$dynamicRef": listener.url("/dyn.json#meta")}}},
            {"$schema": listener.url("/dialect.json"), "properties": {"x": {"type": "string"}}},
        ]
        for schema in schemas:
            problem, seconds = timed(schema, {"x": 5})
            # Cannot be checked here, so the call goes on: the provider checks it.
            assert problem is None, (schema, problem)
            assert seconds < PROMPT, (schema, seconds)
        assert not listener.connected.wait(0.5), f"{listener.accepted} connection(s) to the listener"


def test_a_file_ref_is_never_read(tmp_path: Path) -> None:
    target = tmp_path / "schema.json"
    target.write_text(json.dumps({"type": "string"}))
    # Were the file read, x=5 would violate it and a problem would be reported.
    assert schema_problem({"properties": {"x": {"$ref": target.as_uri()}}}, {"x": 5}) is None
    assert schema_problem({"$id": tmp_path.as_uri() + "/", "properties": {"x": {"$ref": "schema.json"}}},
                          {"x": 5}) is None


def test_refs_inside_the_schema_still_validate() -> None:
    # Regression guard (the old code did this too): only outside references are refused.
    by_pointer = {"$defs": {"n": {"type": "integer"}}, "properties": {"x": {"$ref": "#/$defs/n"}}}
    assert schema_problem(by_pointer, {"x": "one"}) == "x: must satisfy type='integer'"
    assert schema_problem(by_pointer, {"x": 1}) is None
    by_anchor = {"$defs": {"n": {"$anchor": "num", "type": "integer"}}, "properties": {"x": {"$ref": "#num"}}}
    assert schema_problem(by_anchor, {"x": "one"}) == "x: must satisfy type='integer'"
    embedded = {"$id": "https://example.com/root", "$defs": {"n": {"$id": "n", "minimum": 3}},
                "properties": {"x": {"$ref": "https://example.com/n"}}}
    assert schema_problem(embedded, {"x": 2}) == "x: must satisfy minimum=3"
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#",
              "definitions": {"n": {"type": "integer"}}, "properties": {"x": {"$ref": "#/definitions/n"}}}
    assert schema_problem(draft7, {"x": "one"}) == "x: must satisfy type='integer'"
    tree = {"type": "object", "properties": {"n": {"type": "integer"},
                                             "children": {"type": "array", "items": {"$ref": "#"}}}}
    assert schema_problem(tree, {"n": 1, "children": [{"n": 2, "children": [{"n": "three"}]}]}) == \
        "children/0/children/0/n: must satisfy type='integer'"


# ----- regexes of the schema never run here --------------------------------------------------

REGEX_CASES = [
    ({"properties": {"x": {"type": "string", "pattern": EVIL}}}, {"x": EVIL_TEXT}),
    ({"patternProperties": {EVIL: {"type": "integer"}}}, {EVIL_TEXT: "v"}),
    ({"properties": {"y": {}}, "patternProperties": {EVIL: {}}, "additionalProperties": False}, {EVIL_TEXT: 1}),
    ({"patternProperties": {EVIL: {}}, "unevaluatedProperties": False}, {EVIL_TEXT: 1}),
    ({"allOf": [{"patternProperties": {EVIL: {}}}], "unevaluatedProperties": False}, {EVIL_TEXT: 1}),
    ({"propertyNames": {"pattern": EVIL}}, {EVIL_TEXT: 1}),
    ({"properties": {"x": {"not": {"pattern": EVIL}}}}, {"x": EVIL_TEXT}),
    ({"properties": {"x": {"anyOf": [{"type": "integer"}, {"pattern": EVIL}]}}}, {"x": EVIL_TEXT}),
    ({"$defs": {"p": {"pattern": EVIL}}, "properties": {"x": {"$ref": "#/$defs/p"}}}, {"x": EVIL_TEXT}),
    ({"properties": {"x": {"format": "regex"}}}, {"x": EVIL}),
    # Through a bundled meta-schema, which jsonschema checks with its stock class, and whose
    # `$dynamicRef: "#meta"` leads back to this schema's root.
    ({"$id": "https://example.com/s", "$dynamicAnchor": "meta", "properties": {"x": {"pattern": EVIL}},
      "$ref": "https://json-schema.org/draft/2020-12/schema"}, {"properties": {"y": {"x": EVIL_TEXT}}}),
]


@pytest.mark.parametrize("schema, arguments", REGEX_CASES)
def test_the_schemas_regexes_never_run(schema: dict[str, Any], arguments: dict[str, Any],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with regexes_recorded(monkeypatch) as seen:
        problem, seconds = timed(schema, arguments)
    assert EVIL not in seen, "a regex of the schema (or the argument, as a regex) ran"
    assert seconds < PROMPT and problem is None


def test_with_regexes_skipped_the_other_rules_still_hold_and_valid_calls_pass() -> None:
    # The rest of a schema with a regex is still checked ...
    assert schema_problem({"properties": {"x": {"type": "string", "pattern": EVIL}}}, {"x": 5}) == \
        "x: must satisfy type='string'"
    assert schema_problem({"patternProperties": {EVIL: {}}, "required": ["q"]}, {EVIL_TEXT: 1}) == \
        "missing required argument(s) ['q']"
    # ... and a skipped regex never makes valid arguments look invalid, even under a negation
    # (regression guard: deleting `pattern` from the schema would reject each of these).
    valid: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"properties": {"x": {"not": {"pattern": "^a"}}}}, {"x": "bcd"}),
        ({"properties": {"x": {"oneOf": [{"pattern": "^a"}, {"pattern": "^b"}]}}}, {"x": "bcd"}),
        ({"properties": {"x": {"if": {"pattern": "^a"}, "then": {"maxLength": 1}}}}, {"x": "bcd"}),
        ({"properties": {"x": {"contains": {"pattern": "^a"}, "maxContains": 1}}}, {"x": ["ab", "bc"]}),
        # A provider that asserts formats accepts this; the old check (formats as annotations
        # only) rejected it here, before the provider could say.
        ({"properties": {"x": {"not": {"format": "email"}}}}, {"x": "not an address"}),
    ]
    for schema, arguments in valid:
        assert schema_problem(schema, arguments) is None, schema


# ----- bounded size, depth and time ----------------------------------------------------------

def nested(levels: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A schema `levels` properties deep (two JSON levels each) and arguments wrong at the bottom."""
    schema: dict[str, Any] = {"type": "integer"}
    arguments: Any = "not a number"
    for _ in range(levels):
        schema, arguments = {"properties": {"x": schema}}, {"x": arguments}
    return schema, arguments


def test_oversize_and_deep_schemas_are_left_to_the_provider() -> None:
    rule = {"properties": {"x": {"type": "integer"}}}
    under = {**rule, "description": "d" * (MAX_SCHEMA_BYTES - 100)}
    over = {**rule, "description": "d" * MAX_SCHEMA_BYTES}
    assert schema_problem(under, {"x": "s"}) == "x: must satisfy type='integer'"
    assert schema_problem(over, {"x": "s"}) is None
    shallow, shallow_args = nested(MAX_SCHEMA_DEPTH // 2 - 1)
    deep, deep_args = nested(MAX_SCHEMA_DEPTH // 2 + 1)
    assert schema_problem(shallow, shallow_args) is not None
    assert schema_problem(deep, deep_args) is None


def test_costly_checks_stop_in_bounded_time() -> None:
    # 2**18 paths through refs in a schema of a few hundred bytes; every leaf passes.
    levels = 18
    defs: dict[str, Any] = {f"a{i}": {"allOf": [{"$ref": f"#/$defs/a{i + 1}"}] * 2} for i in range(levels)}
    defs[f"a{levels}"] = {"type": "string"}
    problem, seconds = timed({"$defs": defs, "$ref": "#/$defs/a0"}, "s")
    assert problem is None and seconds < PROMPT, seconds
    # Failing leaves: a few problems are reported at once, not 2**18 collected first.
    defs[f"a{levels}"] = {"type": "integer"}
    problem, seconds = timed({"$defs": defs, "$ref": "#/$defs/a0"}, "s")
    assert problem == "(arguments): must satisfy type='integer'" and seconds < PROMPT, seconds
    # uniqueItems falls back to comparing every pair for objects: not run on a long array.
    problem, seconds = timed({"properties": {"x": {"uniqueItems": True}}}, {"x": [{"k": i} for i in range(2000)]})
    assert problem is None and seconds < PROMPT, seconds
    assert schema_problem({"properties": {"x": {"uniqueItems": True}}}, {"x": [{"k": 1}, {"k": 1}]}) == \
        "x: must satisfy uniqueItems=True"


# ----- never a crash, never a value in a message --------------------------------------------

MALFORMED: list[Any] = [
    {"type": 5}, {"properties": []}, {"required": "x"}, {"enum": 5}, {"items": "x"}, {"minimum": "a"},
    {"allOf": {}}, {"$schema": {}}, {"$schema": "https://example.invalid/dialect"}, {"$ref": 5},
    {"$ref": "#"}, {"$ref": "#/nope"}, {"$ref": "%%%"}, {"$id": 5, "type": "string"},
    {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, {"dependentRequired": 1},
    {"properties": {"x": {"$schema": "http://json-schema.org/draft-07/schema#", "pattern": EVIL}}},
    {"additionalProperties": False, "patternProperties": 7}, {"multipleOf": 1e-300}, [], "string",
]


@pytest.mark.parametrize("schema", MALFORMED, ids=[json.dumps(s)[:40] for s in MALFORMED])
def test_a_malformed_schema_never_raises(schema: Any) -> None:
    problem, seconds = timed(schema, {"x": 10**300, "y": [1, "a"], EVIL_TEXT: EVIL_TEXT})
    assert problem is None or isinstance(problem, str)
    assert seconds < PROMPT


KEYWORDS = ["type", "properties", "patternProperties", "additionalProperties", "items", "prefixItems",
            "required", "enum", "const", "not", "anyOf", "allOf", "oneOf", "if", "then", "else", "$ref",
            "$defs", "$id", "$anchor", "minimum", "maxLength", "pattern", "format", "contains",
            "uniqueItems", "unevaluatedProperties", "dependentSchemas", "$schema", "$dynamicRef"]
json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.sampled_from(
    ["#", "#/$defs/a", "#/properties/x", "string", "integer", "object", "a+", EVIL, "http://127.0.0.1:9/s",
     "x", "https://json-schema.org/draft/2020-12/schema"])
schemas = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(KEYWORDS + ["x", "a", "$defs"]), inner, max_size=5),
    max_leaves=30,
)
argument_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=30),
                               lambda inner: st.lists(inner, max_size=4)
                               | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=15)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=st.dictionaries(st.sampled_from(KEYWORDS), schemas, max_size=6),
       arguments=st.dictionaries(st.sampled_from(["x", "a", "y"]), argument_values, max_size=3))
def test_fuzz_any_schema_returns_promptly_and_never_raises(schema: dict[str, Any], arguments: dict[str, Any]) -> None:
    problem, seconds = timed(schema, arguments)
    assert problem is None or isinstance(problem, str)
    assert seconds < PROMPT


def test_messages_name_paths_and_rules_never_values() -> None:
    secret = "s3cr3t-argument-value"
    schema = {"properties": {"x": {"enum": ["a", "b"]}, "y": {"const": "c" * 5000},
                             "z": {"maxLength": 3}, "w": {"type": "integer"}},
              "required": ["q"], "additionalProperties": False}
    problem = schema_problem(schema, {"x": secret, "y": secret, "z": secret, "w": secret, "v": secret})
    assert problem is not None and secret not in problem
    assert "missing required argument(s) ['q']" in problem and "x: must satisfy enum=['a', 'b']" in problem
    assert "w: must satisfy type='integer'" in problem and "y: must satisfy const='ccc" in problem
    assert len(problem) < 1500, "a peer's rule values are cut short in messages"


# ----- end to end: a peer's card with a remote $ref ------------------------------------------

async def test_a_peer_schema_with_a_remote_ref_neither_fetches_nor_stalls_the_node() -> None:
    target = make_node(node_config("target", [py_tool("echo", "echo", ECHO_PARAMS)],
                                   mcp={"enabled": True, "port": 0}))
    with SilentListener() as listener:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(target.running())
            good = make_node(node_config("good", bootstrap=target.addrs[:1]))
            await stack.enter_async_context(good.running())
            await wait_all_know([good], {"echo"})

            hostile = await stack.enter_async_context(raw_host())
            card = {"name": "hostile", "peerId": hostile.get_id().to_string(), "tools": [{
                "name": "fetch_me", "description": "a tool whose schema points at a URL",
                "inputSchema": {"type": "object", "properties": {"x": {"$ref": listener.url()}}},
            }]}
            received: list[dict[str, Any]] = []

            async def answer_card(stream: INetStream) -> None:
                try:
                    await stream.write(frame(card))
                    await read_line(stream)  # the node's own card
                finally:
                    await stream.close()

            async def answer_tool(stream: INetStream) -> None:
                try:
                    request = json.loads(await read_line(stream))
                    received.append(request["arguments"])
                    await stream.write(frame({"id": request["id"], "result": {
                        "content": [{"type": "text", "text": "checked by the provider"}], "isError": False}}))
                finally:
                    await stream.close()

            hostile.set_stream_handler(CARD_PROTOCOL, answer_card)  # type: ignore[arg-type]
            hostile.set_stream_handler(TOOL_PROTOCOL, answer_tool)  # type: ignore[arg-type]
            with trio.fail_after(10):
                await hostile.connect(parse_peer_addr(target.addrs[0]))
            await wait_until(lambda: "fetch_me" in target.router.tools(), target.directory.changed)

            latencies: list[float] = []
            failures: list[str] = []
            mcp_done = trio.Event()
            outcome: dict[str, Any] = {}

            async def mcp_call() -> None:
                try:
                    async with mcp.Client(target.mcp_url, mode="legacy") as client:
                        started = trio.current_time()
                        with trio.fail_after(HOLD + 10):
                            outcome["result"] = await client.call_tool("fetch_me", {"x": 5})
                        outcome["seconds"] = trio.current_time() - started
                except Exception as exc:  # asserted below, after what the listener saw
                    outcome["error"] = repr(exc)
                mcp_done.set()

            async def libp2p_calls() -> None:
                # Another peer's calls to a local tool, while and after the MCP call runs.
                for i in range(1000):
                    started = trio.current_time()
                    try:
                        routed = await good.call("echo", {"text": f"call {i}"}, timeout=HOLD + 10)
                        assert routed.result.text_output() == f"call {i}"
                    except PraxisError as exc:  # asserted below, after what the listener saw
                        failures.append(exc.message)
                    latencies.append(trio.current_time() - started)
                    if mcp_done.is_set() and i >= 2:
                        return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(mcp_call)
                nursery.start_soon(libp2p_calls)

        fetched = listener.connected.wait(0.5)
    assert not fetched, "the node connected to the URL in the peer's schema"
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert not result.is_error and result.content[0].text == "checked by the provider"
    assert received == [{"x": 5}], "the call went on to the provider, which judges its arguments"
    assert outcome["seconds"] < 5.0, outcome["seconds"]
    assert not failures, failures
    assert max(latencies) < 2.0, f"a libp2p call took {max(latencies):.1f} s"

