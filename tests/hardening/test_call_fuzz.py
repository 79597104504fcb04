"""Fuzzing the `/praxis/tool/1.1.0` handler of a running node (hypothesis, >= 10,000 inputs),
as tests/hardening/test_fuzz.py does for the other handlers: whatever a peer writes, the
handler never raises, always ends the stream, writes only valid result frames, and leaves
no call in flight."""

from __future__ import annotations

import json
from collections import Counter

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from libp2p.peer.id import ID

from protocols.call_messages import ResultFrame
from protocols.codec import parse_model
from tests.hardening.doubles import MemoryStream
from tests.hardening.strategies import Payload, json_value, payloads, tool_request_text
from tests.hardening.test_fuzz import (
    HANDLER_EXAMPLES,
    HANDLER_INPUTS,
    KNOWN_CODES,
    OTHER_PEER,
    TRUNCATIONS,
    fuzz_node,
    fuzz_settings,
    run_hypothesis,
    strict_loads,
    thread_runner,
    variants,
)


def as_call(text: str) -> str:
    """A tool request turned into a call frame (when it is an object at all)."""
    return '{"type":"call",' + text[1:] if text.startswith("{") and text != "{}" else text


other_frame = st.one_of(
    st.just('{"type":"cancel"}'),
    st.integers(-3, 5).map(lambda n: json.dumps({"type": "answer", "ask": n, "result": {}})),
    json_value.map(lambda v: json.dumps({"type": "answer", "ask": 1, "error": v})),
    st.sampled_from(["progress", "log", "ask", "result", "call", None, 7]).map(lambda t: json.dumps({"type": t})),
)
call_stream_text = st.lists(tool_request_text.map(as_call) | other_frame, min_size=1, max_size=3).map("\n".join)


class SettlingStream(MemoryStream):
    """The in-memory stream double, whose peer closes its side only once everything it sent
    has been handled (else each call would be cancelled by the EOF right behind it)."""

    async def read(self, n: int | None = None) -> bytes:
        if not self._chunks and not self.was_reset:
            await trio.testing.wait_all_tasks_blocked()
        return await super().read(n)


def check_results(written: bytes) -> list[str]:
    """Every frame the node wrote is a valid result frame; errors in both shapes."""
    outcomes = []
    for line in written.split(b"\n")[:-1]:
        result = parse_model(ResultFrame, strict_loads(line), "result frame")
        if result.error is not None:
            assert result.result.is_error and result.error.code in KNOWN_CODES, line[:200]
            outcomes.append(f"error {result.error.code}")
        else:
            outcomes.append("result")
    assert written.endswith(b"\n") or not written
    return outcomes


async def test_call_handler_in_memory(figures):  # type: ignore[no-untyped-def]
    node = fuzz_node()
    remote = ID.from_base58(OTHER_PEER)
    outcomes: Counter[str] = Counter()
    async with node.running():

        async def one(args: tuple[Payload, bool]) -> None:
            drawn, refuse = args
            for i, payload in enumerate(variants(drawn, TRUNCATIONS)):
                refuse_writes = refuse and i == 0
                stream = SettlingStream(payload.chunks, peer_id=remote, refuse_writes=refuse_writes)
                await node.service.serve_call_stream(stream)  # must not raise
                assert stream.ended, "the handler returned without closing or resetting the stream"
                answers = check_results(bytes(stream.written))
                if refuse_writes:
                    outcomes["write refused"] += 1
                for answer in answers or ["no answer"]:
                    outcomes[answer] += 1

        @fuzz_settings(HANDLER_EXAMPLES)
        @given(args=st.tuples(payloads(call_stream_text), st.integers(0, 19).map(lambda n: n == 0)))
        def check(args: tuple[Payload, bool]) -> None:
            run(args)

        run = thread_runner(one)
        seconds = await run_hypothesis(check)
        assert node.service.in_flight.total_in_flight == 0
    total = sum(outcomes.values())
    figures(f"fuzz (b) call handler 1.1.0 (in-memory): {total} outcomes in {seconds:.1f} s; "
            + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))
    assert total >= HANDLER_INPUTS
    assert outcomes["result"] > 0 and outcomes["error -32600"] > 0
