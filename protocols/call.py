"""`/praxis/tool/1.1.0`: a call is a conversation, and a stream carries several calls in turn.

Same codec and limits as 1.0.0 (one compact JSON object per line, `WireLimits`). Every frame
has a `type` (models in protocols/call_messages.py):

    caller -> provider                         provider -> caller
    {"type":"call", <ToolRequest fields>,      {"type":"progress","progress":3,"total":10,"message":"..."}
     "events":true, "logLevel":"info"}         {"type":"log","level":"info","data":...,"logger":"..."}
    {"type":"answer","ask":1,"result":{...}}   {"type":"ask","ask":1,"method":"sampling/createMessage",
    {"type":"answer","ask":1,                   "params":{...}}
     "error":{"code":-32600,"message":"..."}}  {"type":"result", <ToolResponse fields>, "keepMs":10000}
    {"type":"cancel"}

One call at a time per stream: the caller sends `call`; the provider sends any number of
interim frames (`progress`, `log`, `ask`) and then exactly one `result`; the caller answers
each `ask` by its number and may send `cancel` at any time. `events: false` means the
caller listens to nothing: no interim frames are sent and every question is refused at once.
After the result the caller may send the next `call` on the same stream within `keepMs`
(the provider's idle timeout); `keepMs: 0` means the provider closes the stream now (its
calls-per-stream limit). Either side may close an idle stream; the caller does it first
(after half of `keepMs`), so a call never meets a stream closing under it.

Cancellation: a `cancel` frame, a reset, an EOF or a dropped connection during a call cancel
the call's trio scope on the provider (so the engine stops); where the stream still carries
frames, the caller gets a result with the `Cancelled` error (-32009).

Bounds, per stream: frame size, the whole next call within the idle time, at most
`CallLimits.max_calls` calls. Where a call belongs, anything else (not JSON, not a valid call,
an unknown type) is answered with an error result (-32600, keepMs 0) and the stream closed,
as 1.0.0 answers a bad request; at most `MAX_STRAY_FRAMES` frames that answer nothing (an
answer to no pending question, a cancel with no call, an unknown type during a call) are
ignored before the stream is reset. Per
call: at most `MAX_PENDING_ASKS` questions waiting for an answer, each until the call's
deadline; progress and log frames at most `INTERIM_RATE` a second (burst `INTERIM_BURST`)
and `MAX_INTERIM_BYTES` each, queued at most `OUTBOX_FRAMES` deep and dropped past any of
these: interim frames never make a call wait on a caller that does not read. A frame the
caller does not take within the idle time resets the stream and cancels the call.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import trio

from protocols.call_events import (
    ASK_METHODS,
    LOG_LEVELS,
    NO_EVENTS,
    AskRefused,
    CallEvents,
    LogMessage,
    Progress,
    not_supported,
)
from protocols.call_messages import (
    MAX_MESSAGE,
    AnswerFrame,
    AskFrame,
    CallFrame,
    CancelFrame,
    LogFrame,
    ProgressFrame,
    ResultFrame,
)
from protocols.codec import encode_json, parse_model
from protocols.errors import Busy, Cancelled, InvalidRequest, PeerUnreachable, PraxisError, TooLarge, ToolTimeout
from protocols.event_limits import TokenBucket
from protocols.messages import ToolRequest, ToolResponse
from protocols.streams import ByteStream, FramedStream, WireLimits

CALL_PROTOCOL = "/praxis/tool/1.1.0"

MAX_PENDING_ASKS = 4
MAX_STRAY_FRAMES = 8
INTERIM_RATE = 50.0  # progress and log frames a second, per call
INTERIM_BURST = 50
MAX_INTERIM_BYTES = 64 * 1024
OUTBOX_FRAMES = 64
CANCEL_WRITE_TIMEOUT = 0.5  # for the caller's cancel frame, written while its own scope is cancelled

log = logging.getLogger("praxis.protocol.call")

CallDispatch = Callable[[ToolRequest, str, CallEvents], Awaitable[ToolResponse]]


@dataclass(frozen=True)
class CallLimits:
    max_calls: int = 1000  # calls on one stream, one after the other


# ----- provider side --------------------------------------------------------------------------


@dataclass
class _Question:
    answered: trio.Event
    result: dict[str, Any] | None = None
    error: AskRefused | None = None


class _ServerCall:
    """One call running on a provider's stream, and the `CallEvents` it hands the engine."""

    def __init__(self, session: _ServerSession, frame: CallFrame) -> None:
        self.session = session
        self.request: ToolRequest = frame  # a call frame is a request with a few more fields
        self.listens = frame.events
        self.min_level = LOG_LEVELS.index(frame.log_level) if frame.log_level is not None else None
        self.scope = trio.CancelScope()
        self.why = ""
        self.questions: dict[int, _Question] = {}
        self.asked = 0
        self.bucket = TokenBucket(INTERIM_RATE, INTERIM_BURST)
        self.dropped = 0

    @property
    def log_level(self) -> str | None:
        """The caller's level, passed on when this call is forwarded (`wanted_log_level`)."""
        return LOG_LEVELS[self.min_level] if self.min_level is not None else None

    def cancel(self, why: str) -> None:
        if not self.why:
            self.why = why
        self.scope.cancel()

    def events(self) -> CallEvents:
        return self if self.listens else NO_EVENTS

    # CallEvents ---------------------------------------------------------------------------

    async def progress(self, update: Progress) -> None:
        self._interim(ProgressFrame(type="progress", progress=update.progress, total=update.total,
                                    message=update.message[:MAX_MESSAGE] if update.message else None).to_wire())

    async def log(self, message: LogMessage) -> None:
        if self.min_level is None or message.level not in LOG_LEVELS:
            return
        if LOG_LEVELS.index(message.level) < self.min_level:
            return
        logger = message.logger[:256] if message.logger else None
        self._interim({"type": "log", "level": message.level, "data": message.data, "logger": logger})

    async def ask(self, method: str, params: dict[str, Any], deadline: float) -> dict[str, Any]:
        if method not in ASK_METHODS:
            raise not_supported(method)
        if len(self.questions) >= MAX_PENDING_ASKS:
            raise AskRefused(Busy.code, f"{MAX_PENDING_ASKS} questions to the caller are already waiting")
        self.asked += 1
        number = self.asked
        data = encode_json(AskFrame(type="ask", ask=number, method=method, params=params).to_wire())  # type: ignore[arg-type]
        if len(data) > self.session.limits.max_frame_bytes:
            raise AskRefused(TooLarge.code, f"the question is {len(data)} bytes, over the frame limit")
        question = _Question(trio.Event())
        self.questions[number] = question
        try:
            if not await self.session.outbox_put(data, deadline):
                raise AskRefused(ToolTimeout.code, "the caller could not be asked before the deadline")
            with trio.move_on_at(deadline):
                await question.answered.wait()
            if question.error is not None:
                raise question.error
            if question.result is None:
                raise AskRefused(ToolTimeout.code, "the caller did not answer before the deadline")
            return question.result
        finally:
            del self.questions[number]

    def _interim(self, frame: dict[str, Any]) -> None:
        """Queue a progress or log frame, or drop it (rate, size, a caller that does not read)."""
        if not self.bucket.take():
            self.dropped += 1
            return
        try:
            data = encode_json({k: v for k, v in frame.items() if v is not None})
        except (TypeError, ValueError):  # log data that is not JSON: nothing to send
            self.dropped += 1
            return
        if len(data) > MAX_INTERIM_BYTES or not self.session.outbox_offer(data):
            self.dropped += 1

    def answer(self, frame: AnswerFrame) -> bool:
        """Deliver an answer; False when it answers no question waiting."""
        question = self.questions.get(frame.ask)
        if question is None or question.answered.is_set():
            return False
        if frame.error is not None:
            question.error = AskRefused(frame.error.code, frame.error.message[:MAX_MESSAGE])
        elif frame.result is not None:
            question.result = frame.result
        else:
            question.error = AskRefused(InvalidRequest.code, "the caller's answer has neither result nor error")
        question.answered.set()
        return True


class _ServerSession:
    """The provider's side of one stream: reads frames, runs one call at a time, writes frames in
    order through one writer task."""

    def __init__(self, stream: ByteStream, peer_id: str, dispatch: CallDispatch, limits: WireLimits,
                 call_limits: CallLimits, on_bad_request: Callable[[PraxisError], None] | None) -> None:
        self.peer_id = peer_id
        self.dispatch = dispatch
        self.limits = limits
        self.call_limits = call_limits
        self.on_bad_request = on_bad_request
        # Reads wait as long as `wait_scope` allows: the idle time between calls, no limit during one.
        self.framed: FramedStream = replace(limits, idle_timeout=math.inf).framed(stream)
        self.outbox_send, self.outbox_receive = trio.open_memory_channel[bytes](OUTBOX_FRAMES)
        self.unwritten = 0  # frames in the outbox or being written by the writer task
        self.write_lock = trio.Lock()  # one frame on the stream at a time, in order
        self.call: _ServerCall | None = None
        self.calls = 0
        self.stray = 0
        self.broken = ""  # why the stream must be reset at once, once it must
        self.reset_at_end = False  # reset after the frames already queued
        self.finished = False  # the last call was answered: close the stream
        self.wait_scope = trio.CancelScope()
        self.call_done = trio.Event()
        self.nursery: trio.Nursery | None = None

    async def run(self) -> bool:
        """Serve calls until the stream ends; True when it may be closed cleanly (else reset)."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._write_loop)
            await self._read_loop()
            call = self.call
            if call is not None:
                call.cancel(self.broken or "the caller ended the stream")
                await self.call_done.wait()
            self.outbox_send.close()  # the writer ends after the frames already queued
        return not self.broken and not self.reset_at_end

    # reading ------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while not self.finished and not self.broken:
            raw: Any = None
            with trio.CancelScope() as self.wait_scope:
                self._arm_idle()
                try:
                    raw = await self.framed.read_json()
                except TooLarge as exc:
                    # Unread bytes of the frame remain: answer if no call runs, then reset.
                    if self.call is None:
                        self._bad_call(None, exc)
                    else:
                        self._break(exc.message)
                    self.reset_at_end = True
                    return
                except InvalidRequest as exc:
                    if self.call is None:
                        self._bad_call(None, exc)  # where a call belongs: answered, then the end
                    else:
                        self._stray(exc.message)
                    continue
                except PeerUnreachable:
                    # EOF or reset: between calls that ends the stream; during one it cancels it.
                    if self.call is not None:
                        self.broken = "the caller ended the stream during the call"
                    return
            if raw is None:
                if not self.finished and self.call is None:
                    return  # idle time over: close quietly
                continue
            self._on_frame(raw)

    def _arm_idle(self) -> None:
        idle = self.call is None and not self.finished
        self.wait_scope.deadline = trio.current_time() + self.limits.idle_timeout if idle else math.inf
        if self.finished or self.broken:
            self.wait_scope.cancel()

    def _on_frame(self, raw: Any) -> None:
        kind = raw.get("type") if isinstance(raw, dict) else None
        call = self.call
        if kind == "call":
            if call is not None:
                self._stray("a call frame while a call runs")
                return
            try:
                frame = parse_model(CallFrame, raw, "call frame")
            except InvalidRequest as exc:
                self._bad_call(raw, exc)
                return
            self._start(frame)
        elif kind == "answer":
            try:
                answer = parse_model(AnswerFrame, raw, "answer frame")
            except InvalidRequest as exc:
                self._stray(exc.message)
                return
            if call is None or not call.answer(answer):
                self._stray("an answer to no question waiting")
        elif kind == "cancel":
            if call is None:
                self._stray("a cancel frame with no call running")
            else:
                parse_model(CancelFrame, raw, "cancel frame")
                call.cancel("the caller cancelled the call")
        elif call is None:
            self._bad_call(raw, InvalidRequest("expected a call frame (\"type\": \"call\")"))
        else:
            self._stray("a frame of unknown type")

    def _stray(self, what: str) -> None:
        self.stray += 1
        if self.stray == 1:
            log.info("call stream from %s: refused %s", self.peer_id, what[:200])
        if self.stray >= MAX_STRAY_FRAMES:
            self.broken = f"{self.stray} frames that answer nothing"
            log.info("call stream from %s reset: %s", self.peer_id, self.broken)
            if self.call is not None:
                self.call.cancel(self.broken)
            self.wait_scope.cancel()

    def _bad_call(self, raw: Any, exc: PraxisError) -> None:
        """A call that cannot be read: answered with the error (when the stream can carry it), last."""
        log.warning("bad call frame from %s: %s", self.peer_id, exc.message)
        if self.on_bad_request is not None:
            self.on_bad_request(exc)
        request_id = raw["id"][:128] if isinstance(raw, dict) and isinstance(raw.get("id"), str) else ""
        self.finished = True
        if not self.broken:
            reply = {**ToolResponse.failure(request_id, exc.code, exc.message).to_wire(), "type": "result", "keepMs": 0}
            self.outbox_offer(encode_json(reply))

    # calls -------------------------------------------------------------------------------

    def _start(self, frame: CallFrame) -> None:
        self.calls += 1
        self.call = call = _ServerCall(self, frame)
        self.call_done = trio.Event()
        self._arm_idle()
        assert self.nursery is not None
        self.nursery.start_soon(self._run_call, call)

    async def _run_call(self, call: _ServerCall) -> None:
        response: ToolResponse | None = None
        try:
            with call.scope:
                response = await self.dispatch(call.request, self.peer_id, call.events())
            if response is None:
                response = ToolResponse.failure(call.request.id, Cancelled.code,
                                                f"call cancelled: {call.why or 'the caller gave up'}")
            last = self.calls >= self.call_limits.max_calls
            keep_ms = 0 if last else int(self.limits.idle_timeout * 1000)
            frame = {**response.to_wire(), "type": "result", "keepMs": keep_ms}
            if not self.broken:
                deadline = trio.current_time() + self.limits.idle_timeout
                if self.unwritten == 0 and not self.write_lock.locked():
                    # Nothing waits to go before it (the usual case): written here, which spares
                    # a hand-over to the writer task. The lock keeps any later frame behind it.
                    self.write_lock.acquire_nowait()
                    try:
                        await self._write(encode_json(frame), deadline)
                    finally:
                        self.write_lock.release()
                elif not await self.outbox_put(encode_json(frame), deadline):
                    self._break("the caller did not take the result")
            if last:
                self.finished = True
        finally:
            self.call = None
            self.call_done.set()
            self._arm_idle()

    # writing -----------------------------------------------------------------------------

    def outbox_offer(self, data: bytes) -> bool:
        try:
            self.outbox_send.send_nowait(data)
        except (trio.WouldBlock, trio.ClosedResourceError):
            return False
        self.unwritten += 1
        return True

    async def outbox_put(self, data: bytes, deadline: float) -> bool:
        self.unwritten += 1  # counted from now: the writer may take it before this task resumes
        with trio.move_on_at(deadline):
            try:
                await self.outbox_send.send(data)
                return True
            except trio.ClosedResourceError:
                pass
        self.unwritten -= 1  # not sent (a cancelled send delivers nothing)
        return False

    async def _write_loop(self) -> None:
        async for data in self.outbox_receive:
            try:
                async with self.write_lock:
                    await self._write(data, trio.current_time() + self.limits.idle_timeout)
            finally:
                self.unwritten -= 1

    async def _write(self, data: bytes, deadline: float) -> None:
        """Write one frame (the caller holds `write_lock`). Each frame must be taken within the
        idle time: a caller that stops reading loses the stream, not the provider's call."""
        if self.broken:
            return  # nobody will read it
        try:
            await self.framed.write_frame(data, deadline)
        except PraxisError as exc:
            self._break(f"writing to the caller: {exc.message}")

    def _break(self, why: str) -> None:
        if not self.broken:
            self.broken = why
        if self.call is not None:
            self.call.cancel(why)
        self.wait_scope.cancel()


async def serve_call_stream(
    stream: ByteStream, remote_peer_id: str, dispatch: CallDispatch, limits: WireLimits,
    call_limits: CallLimits, on_bad_request: Callable[[PraxisError], None] | None = None,
) -> bool:
    """Provider side of one 1.1.0 stream: never raises; returns True when the stream may be closed
    cleanly, False when it must be reset (the caller ends it in both cases)."""
    try:
        return await _ServerSession(stream, remote_peer_id, dispatch, limits, call_limits, on_bad_request).run()
    except PraxisError as exc:
        log.info("call stream from %s ended: %s", remote_peer_id, exc.message)
    except Exception:  # a handler must never take the node down; log it and reset
        log.exception("unexpected error serving a call stream from %s", remote_peer_id)
    return False


# ----- caller side ----------------------------------------------------------------------------


class NotSent(PeerUnreachable):
    """The call frame could not be written: the stream was already gone and the tool did not run."""


@dataclass(frozen=True)
class CallOutcome:
    response: ToolResponse
    keep_seconds: float  # how long the provider keeps the stream for the next call; 0: not reusable


def wanted_log_level(events: CallEvents) -> str | None:
    """The lowest log level the caller wants, when its `CallEvents` says so (`log_level`)."""
    level = events.log_level
    return level if level in LOG_LEVELS else None


async def request_call(
    stream: ByteStream, request: ToolRequest, events: CallEvents, limits: WireLimits, deadline: float
) -> CallOutcome:
    """Caller side of one call on a 1.1.0 stream: interim frames go to `events`, questions are
    answered by `events.ask` while reading goes on. Raises `NotSent` when the call frame could
    not be written; the caller ends or reuses the stream."""
    framed = replace(limits, idle_timeout=math.inf).framed(stream)
    listens = events is not NO_EVENTS
    frame = {**request.to_wire(), "type": "call", "events": listens}
    level = wanted_log_level(events)
    if listens and level is not None:
        frame["logLevel"] = level
    try:
        await framed.write_json(frame, deadline)
    except PeerUnreachable as exc:
        raise NotSent(exc.message) from None
    caller = _CallerSide(framed, request, events, deadline)
    if not listens:  # no questions to answer concurrently: no nursery (the common, fast case)
        return await caller.read_until_result(None)
    failure: PraxisError | None = None
    outcome: CallOutcome | None = None
    async with trio.open_nursery() as nursery:
        try:
            outcome = await caller.read_until_result(nursery)
        except PraxisError as exc:
            failure = exc
        nursery.cancel_scope.cancel()  # questions still open are moot once the call ended
    if failure is not None:
        raise failure
    assert outcome is not None
    return outcome


class _CallerSide:
    """Reads a provider's frames for one call; answers its questions in tasks of their own."""

    def __init__(self, framed: FramedStream, request: ToolRequest, events: CallEvents, deadline: float) -> None:
        self.framed = framed
        self.request = request
        self.events = events
        self.deadline = deadline
        self.write_lock = trio.Lock()
        self.answering = 0

    async def read_until_result(self, nursery: trio.Nursery | None) -> CallOutcome:
        """`nursery` answers questions; None: the caller said it listens to nothing, and a
        question is refused at once (and counted as a stray frame)."""
        stray = 0
        while True:
            raw = await self.framed.read_json(self.deadline)
            kind = raw.get("type") if isinstance(raw, dict) else None
            if kind == "result":
                result = parse_model(ResultFrame, raw, "result frame")
                if result.id != self.request.id:
                    raise InvalidRequest(f"result answers call {result.id[:64]!r}, not {self.request.id!r}")
                # Not reusable when an answer may be half written (its task is cancelled now), or
                # when the provider sent more than its result.
                reusable = not self.answering and not self.framed.decoder.buffered
                response = ToolResponse.model_construct(id=result.id, result=result.result, error=result.error)
                return CallOutcome(response, result.keep_ms / 1000 if reusable else 0.0)
            if kind == "progress":
                progress = parse_model(ProgressFrame, raw, "progress frame")
                await self.events.progress(Progress(progress.progress, progress.total, progress.message))
            elif kind == "log":
                entry = parse_model(LogFrame, raw, "log frame")
                await self.events.log(LogMessage(entry.level, entry.data, entry.logger))
            elif kind == "ask":
                ask = parse_model(AskFrame, raw, "ask frame")
                if nursery is None:
                    stray += 1
                    if stray >= MAX_STRAY_FRAMES:
                        raise InvalidRequest(f"the provider sent {stray} questions to a caller that listens to nothing")
                    self.answering += 1
                    await self._answer(ask)
                    continue
                if self.answering >= MAX_PENDING_ASKS:
                    raise InvalidRequest(f"the provider asked more than {MAX_PENDING_ASKS} questions at once")
                self.answering += 1
                nursery.start_soon(self._answer, ask)
            else:
                stray += 1
                if stray >= MAX_STRAY_FRAMES:
                    raise InvalidRequest(f"the provider sent {stray} frames of unknown type")

    async def _answer(self, ask: AskFrame) -> None:
        try:
            try:
                reply: dict[str, Any] = {"type": "answer", "ask": ask.ask,
                                         "result": await self.events.ask(ask.method, ask.params, self.deadline)}
            except AskRefused as refused:
                reply = {"type": "answer", "ask": ask.ask,
                         "error": {"code": refused.code, "message": refused.message[:MAX_MESSAGE]}}
            async with self.write_lock:
                await self.framed.write_json(reply, self.deadline)
        except PraxisError as exc:  # the stream broke: the reading side sees it too
            log.debug("answering a question of the provider: %s", exc.message)
        finally:
            self.answering -= 1


async def send_cancel(stream: ByteStream, limits: WireLimits) -> None:
    """Tell the provider to stop (shielded, briefly: the caller's own scope is cancelled)."""
    with trio.move_on_after(CANCEL_WRITE_TIMEOUT) as scope:
        scope.shield = True
        try:
            await limits.framed(stream).write_json({"type": "cancel"})
        except PraxisError:
            return  # the stream is gone: the provider sees that as a cancel too
