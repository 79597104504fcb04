"""Pydantic models of the frames of `/praxis/tool/1.1.0` (see protocols/call.py for the exchange).

Every frame is one JSON object with a `type` tag. The call and the result are the 1.0.0
request and response with the tag (and a few fields) added, so one model validates both wires.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from protocols.messages import ErrorInfo, ToolRequest, ToolResponse, _WireModel

# The names of protocols.call_events.LOG_LEVELS and ASK_METHODS (a test keeps them equal).
LogLevel = Literal["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
AskMethod = Literal["sampling/createMessage", "elicitation/create"]

MAX_ASK_NUMBER = 2**31
MAX_MESSAGE = 4096  # characters of a progress message or an answer's error message
MAX_LOGGER = 256


class CallFrame(ToolRequest):
    """Caller -> provider: a call. `events` false: the caller listens to nothing during the call
    (no interim frames are sent); `logLevel`: the lowest log level it wants (absent: no logs)."""

    type: Literal["call"]
    events: bool = True
    log_level: LogLevel | None = Field(default=None, alias="logLevel")


class ResultFrame(ToolResponse):
    """Provider -> caller: the call's answer. `keepMs` > 0: the provider keeps the stream open
    that long for the next call; 0: it closes the stream now."""

    type: Literal["result"]
    keep_ms: int = Field(default=0, alias="keepMs", ge=0, le=24 * 3600 * 1000)


class ProgressFrame(_WireModel):
    type: Literal["progress"]
    progress: float
    total: float | None = None
    message: str | None = Field(default=None, max_length=MAX_MESSAGE)


class LogFrame(_WireModel):
    type: Literal["log"]
    level: LogLevel
    data: Any = None
    logger: str | None = Field(default=None, max_length=MAX_LOGGER)


class AskFrame(_WireModel):
    """Provider -> caller: a question only the caller can answer, numbered within the call."""

    type: Literal["ask"]
    ask: int = Field(ge=1, le=MAX_ASK_NUMBER)
    method: AskMethod
    params: dict[str, Any] = Field(default_factory=dict)


class AnswerFrame(_WireModel):
    """Caller -> provider: the answer to ask number `ask`: a `result`, or an `error`."""

    type: Literal["answer"]
    ask: int = Field(ge=1, le=MAX_ASK_NUMBER)
    result: dict[str, Any] | None = None
    error: ErrorInfo | None = None


class CancelFrame(_WireModel):
    """Caller -> provider: stop the running call (it is answered with a `Cancelled` error)."""

    type: Literal["cancel"]
