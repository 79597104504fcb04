"""Hypothesis strategies for hostile praxis frames.

Frames are assembled as JSON *text*, so hostile tokens that no Python value round-trips to
(1e999, 5000-digit integers, lone surrogate escapes, NaN, deep nesting) can be placed in any
field. Each payload is the bytes a peer writes plus the points where it is split into reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from hypothesis import strategies as st

MAX_FRAME = 64 * 1024  # the fuzzed nodes' limits.max_frame_bytes
TOOL_NAMES = ["echo", "echo", "add", "noop", "fail", "nope", "ECHO", "echo\u0000"]


def dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


json_leaf = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=6,
)


def nested(depth: int, kind: str) -> str:
    return "[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth


hostile_token = st.one_of(
    st.sampled_from([
        "1e999", "-1e400", "1e-999", "NaN", "Infinity", "-Infinity", '"\\ud800"', '"a\\udfffb"',
        '"\\u0000"', "true", "null", '""', "[]", "{}", "0", "-0", "1.0", "123456789012345678901234567890",
    ]),
    st.integers(min_value=4290, max_value=4310).map(lambda n: "9" * n),  # Python's int digit limit
    st.integers(min_value=1, max_value=3000).map(lambda n: "1" + "0" * n),
    st.tuples(st.integers(min_value=1, max_value=200), st.sampled_from(["list", "dict"])).map(
        lambda t: nested(*t)),
)


@st.composite
def _object(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[str]], required: frozenset[str]) -> str:
    """Good values for the required fields and some optional ones; then at most one attack:
    a field replaced by a hostile token or a value of the wrong type, a field deleted, an
    unknown field added (ignored by design), or a duplicate key."""
    names = list(fields)
    chosen = [n for n in names if n in required or draw(st.booleans())]
    items = [(n, draw(fields[n])) for n in chosen]
    attack = draw(st.sampled_from(["none", "none", "replace", "wrong-type", "delete", "extra", "duplicate"]))
    if attack in ("replace", "wrong-type") and items:
        i = draw(st.integers(0, len(items) - 1))
        bad = draw(hostile_token if attack == "replace" else json_value.map(dumps))
        items[i] = (items[i][0], bad)
    elif attack == "delete" and items:
        del items[draw(st.integers(0, len(items) - 1))]
    elif attack == "extra":
        items.insert(draw(st.integers(0, len(items))), (draw(st.text(max_size=10)), draw(json_value.map(dumps))))
    elif attack == "duplicate" and items:
        name = items[0][0]
        items.append((name, draw(fields[name] | hostile_token)))
    return "{" + ",".join(f"{dumps(k)}:{v}" for k, v in items) + "}"


def json_object(fields: dict[str, st.SearchStrategy[str]], required: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    return _object(fields, frozenset(required))


# Legal JSON strings no Python str of st.text() produces: UTF-16 escapes, paired and lone.
escaped_s = st.sampled_from(['"\\ud83d\\ude00"', '"\\ud800"', '"a\\udfffb"', '"\\u0000"', '"\\\\ud800"'])
text_s = st.text(max_size=40).map(dumps) | escaped_s
name_s = st.text(min_size=1, max_size=40).map(dumps) | escaped_s
int_s = st.integers().map(dumps)
number_s = st.one_of(st.floats(allow_nan=False, allow_infinity=False).map(dumps), st.integers().map(dumps),
                     st.sampled_from(["1e999", "-1e999", "1e308", "2e308", "-0.0", "1E+400"]))
arguments_s = st.one_of(
    st.fixed_dictionaries({"text": st.text(max_size=30)}).map(dumps),
    json_object({"a": number_s, "b": number_s}, required=("a", "b")),
    json_object({"text": text_s, "a": int_s, "b": hostile_token}),
    json_object({"args": json_object({"text": text_s}),
                 "params": st.just("{}"), "secrets": st.just("{}")}),
)

tool_request_text = json_object({
    "id": name_s,
    "name": (st.sampled_from(TOOL_NAMES).map(dumps)),
    "arguments": arguments_s,
    "timestamp": int_s,
    "deadline_ms": (st.integers(min_value=-5, max_value=3_000).map(dumps)),
    "hops": (st.integers(min_value=-2, max_value=70).map(dumps)),
    "trace_id": text_s,
}, required=("id", "name"))

param_text = json_object({
    "name": text_s,
    "type": (st.sampled_from(["string", "number", "boolean", "object", "array", "int"]).map(dumps)),
    "description": text_s,
    "required": (st.booleans().map(dumps)),
}, required=("name",))
tool_spec_text = json_object({
    "name": text_s,
    "description": text_s,
    "parameters": (st.lists(param_text, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]")),
    "inputSchema": json_value.map(dumps),
    "idempotent": (st.booleans().map(dumps)),
}, required=("name",))
specs_text = st.lists(tool_spec_text, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]")


def card_text(peer_ids: list[str]) -> st.SearchStrategy[str]:
    return json_object({
        "name": text_s,
        "version": text_s,
        "peerId": (st.sampled_from(peer_ids).map(dumps) | text_s),
        "capabilities": (st.lists(st.text(max_size=8), max_size=3).map(dumps)),
        "tools": specs_text,
        "timestamp": int_s,
        "addrs": (st.lists(st.text(max_size=30), max_size=3).map(dumps)),
    }, required=("name", "peerId"))


def peer_list_text(peer_ids: list[str]) -> st.SearchStrategy[str]:
    record = json_object({
        "peerId": (st.sampled_from(peer_ids).map(dumps) | text_s),
        "name": text_s,
        "addrs": (st.lists(st.text(max_size=30), max_size=20).map(dumps)),
        "tools": specs_text,
    }, required=("peerId",))
    return json_object({"peers": (st.lists(record, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"))})


@dataclass(frozen=True)
class Payload:
    """What a hostile peer writes: `data`, delivered in the reads `chunks`."""

    data: bytes
    chunks: tuple[bytes, ...]

    def __repr__(self) -> str:  # hypothesis prints this on failure
        return f"Payload(data={self.data[:300]!r}{'...' if len(self.data) > 300 else ''}, reads={len(self.chunks)})"


def _mutate(draw: st.DrawFn, data: bytes) -> bytes:
    how = draw(st.sampled_from(["keep", "keep", "keep", "truncate", "bad-utf8", "flip", "insert-newline"]))
    if how == "keep" or not data:
        return data
    at = draw(st.integers(min_value=0, max_value=len(data)))
    if how == "truncate":
        return data[:at]
    if how == "bad-utf8":
        junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80\x80"]))
        return data[:at] + junk + data[at:]
    if how == "flip":
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
    return data[:at] + b"\n" + data[at:]


@st.composite
def payloads(draw: st.DrawFn, frame_text: st.SearchStrategy[str]) -> Payload:
    kind = draw(st.sampled_from(["frame"] * 6 + ["json", "binary", "deep", "oversized", "empty"]))
    if kind == "frame":
        data = draw(frame_text).encode("utf-8", "surrogatepass")
    elif kind == "json":
        data = draw(json_value.map(dumps) | hostile_token).encode("utf-8", "surrogatepass")
    elif kind == "binary":
        data = draw(st.binary(max_size=200))
    elif kind == "deep":
        depth = draw(st.integers(min_value=60, max_value=5_000))
        data = nested(depth, draw(st.sampled_from(["list", "dict"]))).encode()
    elif kind == "oversized":
        data = b'{"id":"' + b"x" * draw(st.integers(min_value=MAX_FRAME - 20, max_value=MAX_FRAME + 4096))
    else:
        data = b""
    data = _mutate(draw, data)
    ending = draw(st.sampled_from([b"\n"] * 6 + [b"", b"\r\n", b"\n\n", b'\n{"id":"second"}\n']))
    data += ending
    cuts = sorted(set(draw(st.lists(st.integers(min_value=1, max_value=max(1, len(data) - 1)), max_size=6))))
    bounds = [0, *[c for c in cuts if c < len(data)], len(data)]
    chunks = tuple(data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a)
    return Payload(data, chunks)
