"""Suite 1 of issue 5: fuzz every protocol handler (tool, card, peers) with hostile input.

(a) pure: FrameDecoder, decode_json and parse_model never raise anything but PraxisError
    subclasses; whatever they accept can be encoded back; a byte stream split at every
    boundary yields the same frames as fed whole.
(b) the real handlers of a running Node (`service.serve_tool_stream` with the
    node's ToolService, `cards.serve_card_stream` -> `exchange_cards`, `peer_exchange.serve_peers_stream` and the
    client side `read_peer_list`) over the in-memory TEST DOUBLE `MemoryStream`: they never
    raise, always end the stream, and every answer is a well-formed error frame or a valid
    response. At least 10,000 inputs per handler.
(c) the same inputs over real libp2p streams on 127.0.0.1 (a few hundred per handler),
    then the node still answers a normal call.

Hypothesis runs in a worker thread; each example is handed to the test's trio loop with
`trio.from_thread.run`, so one running Node serves every example and failures still shrink.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID

from node.app import Node
from protocols import errors
from protocols.card import CARD_PROTOCOL
from protocols.codec import FrameDecoder, decode_json, encode_json, parse_model
from protocols.errors import PraxisError, TooLarge
from protocols.messages import Card, ToolRequest, ToolResponse
from protocols.peers import PEERS_PROTOCOL, PeerList, read_peer_list
from protocols.tool import TOOL_PROTOCOL
from tests.hardening.doubles import MemoryStream
from tests.hardening.strategies import MAX_FRAME, Payload, card_text, payloads, peer_list_text, tool_request_text
from tests.helpers import ECHO_PARAMS, make_node, node_config, py_tool
from tests.raw_peer import frame, open_stream, raw_host, read_json

PURE_EXAMPLES = 600  # each also cut short at up to 100 byte boundaries: ~50,000 inputs
HANDLER_EXAMPLES = 1_200  # each fed whole and cut short at up to 9 boundaries: ~11,000 inputs per handler
HANDLER_INPUTS = 10_000
TRUNCATIONS = 9
NETWORK_EXAMPLES = 200
# The fuzzed node's idle timeout: a safety net only. No input here leaves the node waiting on a
# silent peer (every payload holds a complete frame, ends in EOF or is too large), so it never has
# to fire; a short one (it was 0.5 s) fires on a busy machine between two reads of one request, or
# before the answer is written, and the node then rightly ends the stream without an answer.
IDLE = 10.0
KNOWN_CODES = {cls.code for cls in vars(errors).values()
               if isinstance(cls, type) and issubclass(cls, PraxisError)}
OTHER_PEER = ID.from_pubkey(create_new_key_pair().public_key).to_string()


def fuzz_settings(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])


def fuzz_node() -> Node:
    return make_node(node_config(
        "fuzzed",
        [py_tool("echo", "echo", ECHO_PARAMS), py_tool("noop", "noop"),
         py_tool("add", "add", [{"name": "a", "type": "number", "required": True},
                                {"name": "b", "type": "number", "required": True}]),
         py_tool("fail", "fail", [{"name": "message", "type": "string", "required": True}])],
        # One fuzzing "peer" sends thousands of cards: the push rate limit has its own test.
        limits={"max_frame_bytes": MAX_FRAME, "idle_timeout_seconds": IDLE, "max_card_pushes_per_minute": 10**9},
    ))


def strict_loads(line: bytes) -> Any:
    """Standard JSON only: UTF-8, no NaN/Infinity (what a Go peer accepts)."""
    def refuse(name: str) -> Any:
        raise AssertionError(f"non-standard JSON constant {name} on the wire")
    return json.loads(line.decode("utf-8"), parse_constant=refuse)


def first_frame(data: bytes) -> bytes | None:
    """The first complete frame the node may read from `data`, or None (none within the limit)."""
    index = data.find(b"\n")
    return data[:index] if 0 <= index <= MAX_FRAME else None


def check_tool_answer(written: bytes, sent: bytes) -> str:
    """Zero or one frame; if one: a valid ToolResponse, errors in both shapes. Returns an outcome."""
    if not written:
        return "no answer"
    assert written.endswith(b"\n") and written.count(b"\n") == 1, written[:200]
    response = parse_model(ToolResponse, strict_loads(written[:-1]), "tool response")
    frame_bytes = first_frame(sent)
    if frame_bytes is not None:
        try:
            raw = decode_json(frame_bytes)
        except PraxisError:
            raw = None
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            assert response.id == raw["id"][:128]
    if response.error is not None:
        assert response.result.is_error, "an error must also be an isError result (for Go callers)"
        assert response.error.code in KNOWN_CODES, response.error.code
        assert response.result.text_output() == response.error.message
        return f"error {response.error.code}"
    assert not response.result.is_error
    return "result"


def truncations(data: bytes, count: int) -> list[bytes]:
    """Truncated frames: `data` cut short at up to `count` byte boundaries, then terminated."""
    if len(data) <= count:
        points: list[int] = list(range(len(data)))
    else:
        points = sorted({len(data) * i // count for i in range(count)})
    return [data[:k] + b"\n" for k in points]


def variants(payload: Payload, count: int) -> list[Payload]:
    """The payload as drawn (split into its reads) plus its truncations (one read each)."""
    return [payload] + [Payload(cut, (cut,)) for cut in truncations(payload.data, count)]


def thread_runner(fn: Callable[[Any], Awaitable[None]], timeout: float = 60.0) -> Callable[[Any], None]:
    """From the hypothesis thread: run one example in the test's trio loop, bounded in time
    (a safety net against a hang, past every wait inside an example, IDLE + 2 s included)."""
    async def bounded(arg: Any) -> None:
        with trio.fail_after(timeout):
            await fn(arg)

    return lambda arg: trio.from_thread.run(bounded, arg)


async def run_hypothesis(test: Callable[[], None]) -> float:
    started = time.perf_counter()
    await trio.to_thread.run_sync(test)
    return time.perf_counter() - started


# ----- (a) pure ------------------------------------------------------------------------


def drain(decoder: FrameDecoder) -> tuple[list[bytes], str | None]:
    frames = []
    try:
        while (f := decoder.next_frame()) is not None:
            frames.append(f)
    except TooLarge:
        return frames, "TooLarge"
    return frames, None


def decode_in_pieces(pieces: list[bytes], limit: int) -> tuple[list[bytes], str | None]:
    decoder = FrameDecoder(limit)
    frames: list[bytes] = []
    for piece in pieces:
        decoder.feed(piece)
        got, error = drain(decoder)
        frames += got
        if error:
            return frames, error
    return frames, None


small_streams = st.lists(
    st.one_of(tool_request_text.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=40)),
    min_size=1, max_size=3,
).map(lambda parts: b"\n".join(p[:300] for p in parts)) | st.binary(max_size=300)


@pytest.mark.parametrize("limit", [16, 128, MAX_FRAME])
def test_split_at_every_byte_boundary_yields_the_same_frames(figures, limit):
    count = Counter()

    @fuzz_settings(300)
    @given(data=small_streams, trailing=st.sampled_from([b"", b"\n"]))
    def check(data: bytes, trailing: bytes) -> None:
        data += trailing
        whole = decode_in_pieces([data], limit)
        assert decode_in_pieces([bytes([b]) for b in data], limit) == whole
        for i in range(len(data) + 1):
            assert decode_in_pieces([data[:i], data[i:]], limit) == whole, i
        count["streams"] += 1
        count["splits"] += len(data) + 2

    started = time.perf_counter()
    check()
    figures(f"fuzz (a) split at every boundary, frame limit {limit}: {count['streams']} streams, "
            f"{count['splits']} splittings, {time.perf_counter() - started:.1f} s")


def pure_pipeline(payload: Payload, model: type, what: str) -> str:
    """Decoder -> decode_json -> parse_model, as a handler does; only PraxisError may come out."""
    decoder = FrameDecoder(MAX_FRAME)
    try:
        for chunk in payload.chunks:
            decoder.feed(chunk)
            raw = decoder.next_frame()
            if raw is not None:
                break
        else:
            return "incomplete"
        value = parse_model(model, decode_json(raw), what)
    except PraxisError as exc:
        return type(exc).__name__
    # Anything accepted must go back on the wire as standard JSON and parse to the same model.
    wire = encode_json(value.to_wire())
    assert parse_model(model, strict_loads(wire[:-1]), what) == value
    return "accepted"


PURE_CASES = {
    "tool": (tool_request_text, ToolRequest, "tool request"),
    "card": (card_text([OTHER_PEER]), Card, "card"),
    "peers": (peer_list_text([OTHER_PEER]), PeerList, "peer list"),
}


@pytest.mark.parametrize("handler", list(PURE_CASES))
def test_pure_path_raises_only_typed_errors(figures, handler):
    text, model, what = PURE_CASES[handler]
    outcomes: Counter[str] = Counter()

    @fuzz_settings(PURE_EXAMPLES)
    @given(payload=payloads(text))
    def check(payload: Payload) -> None:
        for each in variants(payload, 100):
            outcomes[pure_pipeline(each, model, what)] += 1

    started = time.perf_counter()
    check()
    total = sum(outcomes.values())
    figures(f"fuzz (a) pure {handler}: {total} inputs in {time.perf_counter() - started:.1f} s; "
            + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))
    assert total >= 10 * PURE_EXAMPLES
    assert outcomes["accepted"] > 0 and outcomes["InvalidRequest"] > 0


# ----- (b) real handlers over the in-memory test double -------------------------------


async def test_tool_handler_in_memory(figures):
    node = fuzz_node()
    remote = ID.from_base58(OTHER_PEER)
    outcomes: Counter[str] = Counter()
    async with node.running():

        async def one(args: tuple[Payload, bool]) -> None:
            drawn, refuse = args
            for i, payload in enumerate(variants(drawn, TRUNCATIONS)):
                refuse_writes = refuse and i == 0
                stream = MemoryStream(payload.chunks, peer_id=remote, refuse_writes=refuse_writes)
                await node.service.serve_tool_stream(stream)  # must not raise
                assert stream.ended, "the handler returned without closing or resetting the stream"
                outcome = check_tool_answer(bytes(stream.written), payload.data)
                if first_frame(payload.data) is not None and not refuse_writes:
                    assert outcome != "no answer", "a complete frame got no answer"
                outcomes["write refused" if refuse_writes else outcome] += 1

        @fuzz_settings(HANDLER_EXAMPLES)
        @given(args=st.tuples(payloads(tool_request_text), st.integers(0, 19).map(lambda n: n == 0)))
        def check(args: tuple[Payload, bool]) -> None:
            run(args)

        run = thread_runner(one)
        seconds = await run_hypothesis(check)
        assert node.service.in_flight.total_in_flight == 0
    total = sum(outcomes.values())
    figures(f"fuzz (b) tool handler (in-memory): {total} inputs in {seconds:.1f} s; "
            + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))
    assert total >= HANDLER_INPUTS
    assert outcomes["result"] > 0 and outcomes["error -32600"] > 0 and outcomes["error -32602"] > 0


async def test_card_handler_in_memory(figures):
    node = fuzz_node()
    remote = ID.from_base58(OTHER_PEER)
    outcomes: Counter[str] = Counter()
    async with node.running():

        async def one(args: tuple[Payload, bool]) -> None:
            drawn, refuse = args
            for i, payload in enumerate(variants(drawn, TRUNCATIONS)):
                await card_input(payload, refuse and i == 0)

        async def card_input(payload: Payload, refuse_writes: bool) -> None:
            stream = MemoryStream(payload.chunks, peer_id=remote, refuse_writes=refuse_writes)
            await node.cards.serve_card_stream(stream)  # must not raise
            assert stream.ended
            if refuse_writes:
                assert not stream.written and stream.was_reset
                outcomes["write refused"] += 1
                return
            # The node's own card goes out first, whatever the peer sends.
            assert stream.written.endswith(b"\n") and stream.written.count(b"\n") == 1
            own = parse_model(Card, strict_loads(bytes(stream.written[:-1])), "card")
            assert own.peer_id == node.peer_id
            raw = first_frame(payload.data)
            try:
                if raw is None:
                    raise PraxisError("no complete frame")
                card = parse_model(Card, decode_json(raw), "card")
                accepted = card.peer_id == OTHER_PEER
            except PraxisError:
                accepted = False
            assert stream.closed == accepted and stream.was_reset == (not accepted)
            assert node.directory.get(OTHER_PEER) is None  # not connected: never stored
            outcomes["card accepted" if accepted else "card refused"] += 1

        @fuzz_settings(HANDLER_EXAMPLES)
        @given(args=st.tuples(payloads(card_text([OTHER_PEER, OTHER_PEER, "QmNotThisPeer"])),
                              st.integers(0, 19).map(lambda n: n == 0)))
        def check(args: tuple[Payload, bool]) -> None:
            run(args)

        run = thread_runner(one)
        seconds = await run_hypothesis(check)
    total = sum(outcomes.values())
    figures(f"fuzz (b) card handler (in-memory): {total} inputs in {seconds:.1f} s; "
            + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))
    assert total >= HANDLER_INPUTS and outcomes["card accepted"] > 0


async def test_peers_handler_in_memory(figures):
    """The client side parses a hostile peer list; the server side re-serves whatever cards
    a card exchange would have accepted (stored in the directory as from a connected peer)."""
    node = fuzz_node()
    outcomes: Counter[str] = Counter()
    async with node.running():

        async def one(args: tuple[Payload, Payload]) -> None:
            lists, cards = variants(args[0], TRUNCATIONS + 3), variants(args[1], TRUNCATIONS)
            for i, list_payload in enumerate(lists):
                await peers_input(list_payload, cards[i % len(cards)])

        async def peers_input(list_payload: Payload, card_payload: Payload) -> None:
            # Client side: `read_peer_list` on what a hostile responder sends.
            stream = MemoryStream(list_payload.chunks, peer_id=ID.from_base58(OTHER_PEER))
            try:
                peers = await read_peer_list(stream, node.limits, trio.current_time() + 5)
                outcomes[f"list accepted ({len(peers.peers)} peers)" if peers.peers else "list accepted (empty)"] += 1
            except PraxisError as exc:
                outcomes[f"list refused: {type(exc).__name__}"] += 1
            # Server side: a card a peer got accepted must not break the list served to others.
            raw = first_frame(card_payload.data)
            stored = None
            if raw is not None:
                try:
                    stored = parse_model(Card, decode_json(raw), "card")
                except PraxisError:
                    stored = None
            if stored is not None and stored.peer_id != OTHER_PEER:
                stored = None  # a card exchange accepts only the authenticated peer's own card
            if stored is not None:
                node.directory.update(stored)
            try:
                server = MemoryStream(card_payload.chunks, peer_id=ID.from_base58(OTHER_PEER))
                await node.peer_exchange.serve_peers_stream(server)  # must not raise
                assert server.closed and not server.was_reset
                assert server.written.endswith(b"\n") and server.written.count(b"\n") == 1
                served = parse_model(PeerList, strict_loads(bytes(server.written[:-1])), "peer list")
                if stored is not None:
                    assert any(r.peer_id == stored.peer_id and r.name == stored.name for r in served.peers)
                    outcomes["served a list with a fuzzed card"] += 1
            finally:
                if stored is not None:
                    node.directory.remove(stored.peer_id)

        @fuzz_settings(HANDLER_EXAMPLES)
        @given(args=st.tuples(payloads(peer_list_text([OTHER_PEER, "QmSomeoneElse"])),
                              payloads(card_text([OTHER_PEER]))))
        def check(args: tuple[Payload, Payload]) -> None:
            run(args)

        run = thread_runner(one)
        seconds = await run_hypothesis(check)
    total = sum(v for k, v in outcomes.items() if k.startswith("list"))
    figures(f"fuzz (b) peers handler (in-memory): {total} inputs in {seconds:.1f} s; "
            + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))
    assert total >= HANDLER_INPUTS and outcomes["served a list with a fuzzed card"] > 0


# ----- (c) real libp2p streams on 127.0.0.1 --------------------------------------------


async def send_and_collect(stream: Any, payload: Payload) -> tuple[bytes, bool, str]:
    """Write the payload, then read until the node ends the stream. Returns (answer, ended, how)."""
    how = "sent"
    try:
        with trio.fail_after(5):
            for chunk in payload.chunks:
                await stream.write(chunk)
            if b"\n" not in payload.data:  # nothing for the node to answer: half-close, as EOF
                await stream.close_write()
    except StreamError:  # the node cut an oversized frame short and reset the stream
        how = "cut while writing"
    answer = bytearray()
    try:
        with trio.move_on_after(IDLE + 2):
            try:
                while True:
                    chunk = await stream.read(65536)
                    if not chunk:
                        return bytes(answer), True, how
                    answer += chunk
            except StreamError:  # StreamEOF / StreamReset: the node ended the stream
                return bytes(answer), True, how
        return bytes(answer), False, how
    finally:
        # Our side of the stream too: a stream the node closed is only half-closed until we
        # close ours, and counts against limits.max_streams_per_peer until then.
        with trio.move_on_after(2):
            try:
                await stream.reset()
            except Exception:  # already gone
                pass


async def test_handlers_over_real_streams(figures):
    node = fuzz_node()
    counts: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    async with node.running(), raw_host() as go:
        go_id = go.get_id().to_string()
        addr = node.addrs[0]

        async def tool_one(payload: Payload) -> None:
            stream = await open_stream(go, addr, TOOL_PROTOCOL)
            answer, ended, how = await send_and_collect(stream, payload)
            assert ended, "the node did not end a tool stream within idle timeout + 2 s"
            outcome = check_tool_answer(answer, payload.data)
            if first_frame(payload.data) is not None and how == "sent":
                assert outcome != "no answer"
            counts["tool"] += 1
            outcomes[f"tool {outcome}"] += 1

        async def card_one(payload: Payload) -> None:
            node.directory.remove(go_id)  # so "stored" below means this very card was accepted
            stream = await open_stream(go, addr, CARD_PROTOCOL)
            answer, ended, how = await send_and_collect(stream, payload)
            assert ended, "the node did not end a card stream within idle timeout + 2 s"
            # The node writes its card first; when it then refuses ours it resets the stream,
            # and a libp2p reset may discard that card before we read it: zero or one frame.
            assert answer.count(b"\n") <= 1 and answer.endswith(b"\n") == bool(answer), answer[:200]
            if answer:
                assert parse_model(Card, strict_loads(answer[:-1]), "card").peer_id == node.peer_id
            else:
                outcomes["card: node's card lost to the reset"] += 1
            counts["card"] += 1
            outcomes["card stored" if node.directory.get(go_id) else "card not stored"] += 1

        async def peers_one(payload: Payload) -> None:
            stream = await open_stream(go, addr, PEERS_PROTOCOL)
            answer, ended, how = await send_and_collect(stream, payload)
            assert ended and answer.count(b"\n") == 1
            parse_model(PeerList, strict_loads(answer.split(b"\n")[0]), "peer list")
            counts["peers"] += 1

        run_tool, run_card, run_peers = thread_runner(tool_one), thread_runner(card_one), thread_runner(peers_one)

        @fuzz_settings(NETWORK_EXAMPLES)
        @given(payload=payloads(tool_request_text))
        def tools(payload: Payload) -> None:
            run_tool(payload)

        @fuzz_settings(NETWORK_EXAMPLES)
        @given(payload=payloads(card_text([go_id, go_id, node.peer_id])))
        def cards(payload: Payload) -> None:
            # A card with the raw host's own peer ID is stored: the peers protocol re-serves it.
            run_card(payload)
            run_peers(Payload(b"", ()))

        @fuzz_settings(NETWORK_EXAMPLES // 2)
        @given(payload=payloads(peer_list_text([go_id])))
        def peer_lists(payload: Payload) -> None:
            run_peers(payload)

        seconds = 0.0
        for test in (tools, cards, peer_lists):
            seconds += await run_hypothesis(test)

        # Still serving a normal call, after all of that.
        stream = await open_stream(go, addr, TOOL_PROTOCOL)
        with trio.fail_after(5):
            await stream.write(frame({"id": "after", "name": "echo", "arguments": {"text": "still here"}}))
        response = await read_json(stream)
        assert response["id"] == "after" and response["result"]["content"][0]["text"] == "still here"
        assert node.service.in_flight.total_in_flight == 0
    figures(f"fuzz (c) over libp2p on 127.0.0.1: tool {counts['tool']}, card {counts['card']}, "
            f"peers {counts['peers']} inputs in {seconds:.1f} s; then a normal call succeeded; "
            + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))
    assert counts["tool"] >= NETWORK_EXAMPLES and counts["card"] >= NETWORK_EXAMPLES
