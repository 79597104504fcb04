"""The pure codec of the praxis wire: newline-delimited JSON frames, with bounds.

No I/O here (h11-style): `FrameDecoder` takes bytes in and gives complete frames out,
`decode_json` / `encode_json` turn one frame into a value and back under the JSON limits, and
`parse_model` validates a decoded frame into a message model. `protocols/streams.py` is the
thin trio layer that reads and writes frames on a libp2p stream.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from protocols.errors import InvalidRequest, TooLarge

DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024
DEFAULT_IDLE_TIMEOUT = 10.0
DEFAULT_MAX_DEPTH = 64
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
M = TypeVar("M", bound=BaseModel)


class FrameDecoder:
    """Splits a byte stream into newline-terminated frames of bounded size."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer already known to hold no newline

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next complete frame without its newline, or None if more bytes are needed.

        Raises `TooLarge` once a frame exceeds the limit, whether or not its newline came.
        """
        index = self._buffer.find(b"\n", self._scanned)
        if index < 0:
            self._scanned = len(self._buffer)
            if self._scanned > self.max_frame_bytes:
                raise TooLarge(f"frame exceeds the limit of {self.max_frame_bytes} bytes")
            return None
        if index > self.max_frame_bytes:
            raise TooLarge(f"frame exceeds the limit of {self.max_frame_bytes} bytes")
        frame = bytes(self._buffer[:index])
        del self._buffer[: index + 1]
        self._scanned = 0
        return frame


def json_depth(value: Any, limit: float = float("inf")) -> int:
    """Nesting depth of a decoded JSON value, counted up to just past `limit` (iterative: no
    recursion on hostile input)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def decode_json(frame: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse one frame; every failure is an `InvalidRequest` that says what was wrong."""
    try:
        text = frame.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"frame is not valid UTF-8 (byte {exc.start})") from None
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise InvalidRequest(f"JSON nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError, and int strings past Python's digit limit
        raise InvalidRequest(f"frame is not valid JSON: {_short(str(exc))}") from None
    # Every level opens a bracket, so a frame with few brackets needs no walk to know its depth.
    brackets = frame.count(b"{") + frame.count(b"[")
    if brackets > max_depth and json_depth(value, max_depth) > max_depth:
        raise InvalidRequest(f"JSON nested deeper than {max_depth} levels")
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        # Such a string cannot be encoded as UTF-8: echoing or storing it would break later.
        raise InvalidRequest("frame has a string with an unpaired UTF-16 surrogate escape")
    return value


def _finite_float(text: str) -> float:
    # 1e999 parses to inf, which no JSON encoder can write back: refuse it on the way in.
    value = float(text)
    if math.isinf(value):
        raise ValueError("number out of range")
    return value


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Built once: `json.loads` / `json.dumps` with options build a new decoder / encoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_json(value: Any) -> bytes:
    """One compact JSON value plus the newline terminator."""
    return _ENCODER.encode(value).encode() + b"\n"


def parse_model(model: type[M], raw: Any, what: str) -> M:
    """Validate a decoded frame; the error names the fields, never their values."""
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{what} must be a JSON object, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:5]:
            field = ".".join(str(p) for p in err["loc"]) or "(root)"
            problems.append(f"{field}: {err['msg']}")
        raise InvalidRequest(f"invalid {what}: " + "; ".join(problems)) from None
