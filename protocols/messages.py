"""Pydantic models of every message on the praxis wire protocols (docs/architecture.md, "The wire").

Field names follow the reference Go node (camelCase on the wire). Models accept unknown
fields from peers (the Go node may add some) but only ever emit the fields declared here.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from protocols.codec import json_depth

ParamType = Literal["string", "number", "boolean", "object", "array"]
Addr = Annotated[str, Field(max_length=256)]  # a multiaddr as text

# Bounds on what one card may carry (far below the frame limit): a card is parsed, stored and
# listed on every node that sees it, so its cost must stay small whatever a peer sends.
MAX_TOOLS_PER_CARD = 256
MAX_PARAMETERS = 64
MAX_DESCRIPTION = 4096
MAX_SCHEMA_BYTES = 64 * 1024
MAX_SCHEMA_DEPTH = 32
MAX_CAPABILITIES = 32
# A name is printable and has no whitespace: names end up in logs, MCP listings and errors.
NAME_PATTERN = r"^[^\x00-\x20\x7f-\x9f\u2028\u2029]+$"
# A tool name also has no "@": `name@provider` is how MCP clients tell variants apart.
TOOL_NAME_PATTERN = r"^[^\x00-\x20\x7f-\x9f\u2028\u2029@]+$"
# A label (a node's name or version) is printable; spaces are fine, line breaks are not.
LABEL_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$"


def now_ms() -> int:
    return int(time.time() * 1000)


class _WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ToolParameter(_WireModel):
    name: str = Field(min_length=1, max_length=128, pattern=NAME_PATTERN)
    type: ParamType = "string"
    description: str = Field(default="", max_length=MAX_DESCRIPTION)
    required: bool = False


class ToolSpec(_WireModel):
    """A tool as advertised in a card."""

    name: str = Field(min_length=1, max_length=128, pattern=TOOL_NAME_PATTERN)
    description: str = Field(default="", max_length=MAX_DESCRIPTION)
    parameters: list[ToolParameter] = Field(default_factory=list, max_length=MAX_PARAMETERS)
    # Python-node extensions; the Go node ignores them.
    input_schema: dict[str, Any] | None = Field(default=None, alias="inputSchema")
    idempotent: bool | None = None

    @field_validator("parameters", mode="before")
    @classmethod
    def _null_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v

    @field_validator("input_schema")
    @classmethod
    def _bounded_schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return v
        if json_depth(v, MAX_SCHEMA_DEPTH) > MAX_SCHEMA_DEPTH:
            raise ValueError(f"nested deeper than {MAX_SCHEMA_DEPTH} levels")
        size = len(json.dumps(v, separators=(",", ":")).encode())
        if size > MAX_SCHEMA_BYTES:
            raise ValueError(f"{size} bytes, over the limit of {MAX_SCHEMA_BYTES}")
        return v

    def fingerprint(self) -> str:
        """A digest of the definition (everything but the name): equal specs, equal digests."""
        body = self.model_dump(by_alias=True, exclude={"name"}, mode="json")
        return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


class Card(_WireModel):
    name: str = Field(max_length=256, pattern=LABEL_PATTERN)
    version: str = Field(default="", max_length=64, pattern=LABEL_PATTERN)
    peer_id: str = Field(alias="peerId", min_length=1, max_length=128)
    capabilities: list[str] = Field(default_factory=list, max_length=MAX_CAPABILITIES)
    tools: list[ToolSpec] = Field(default_factory=list, max_length=MAX_TOOLS_PER_CARD)
    timestamp: int = Field(default_factory=now_ms)
    # Python-node extension: where the peer listens, so others can dial it (Go ignores it).
    addrs: list[Addr] = Field(default_factory=list, max_length=16)

    @field_validator("capabilities", "tools", "addrs", mode="before")
    @classmethod
    def _null_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v


class ContentItem(BaseModel):
    """MCP-style content; unknown kinds (image, resource...) pass through unchanged."""

    model_config = ConfigDict(extra="allow")

    type: str = "text"
    text: str | None = None


class ToolResult(_WireModel):
    """What a tool returns: MCP-style content, optional structured content, and isError."""

    content: list[ContentItem] = Field(default_factory=list)
    is_error: bool = Field(default=False, alias="isError")
    structured_content: dict[str, Any] | None = Field(default=None, alias="structuredContent")

    @field_validator("content", mode="before")
    @classmethod
    def _null_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v

    @classmethod
    def text(cls, text: str, *, is_error: bool = False) -> ToolResult:
        return cls(content=[ContentItem(type="text", text=text)], is_error=is_error)

    def text_output(self) -> str:
        """All text content joined: what a human or a Go caller reads as the result."""
        return "".join(item.text or "" for item in self.content if item.type == "text")


class ErrorInfo(_WireModel):
    code: int
    message: str


class CallOrigin(_WireModel):
    """The `origin` field of a tool request (a Python-node extension; Go ignores it)."""

    peer_id: str = Field(alias="peerId", min_length=1, max_length=128)
    target: str = Field(min_length=1, max_length=128)
    nonce: str = Field(pattern=r"^[0-9a-f]{32}$")
    expires_ms: int = Field(alias="expiresMs", ge=0, le=2**53)
    signature: str = Field(min_length=1, max_length=256)  # base64


class ToolRequest(_WireModel):
    id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=128)
    arguments: dict[str, Any] = Field(default_factory=dict)
    timestamp: int = Field(default_factory=now_ms)
    # Python-node extensions; a Go node ignores them.
    deadline_ms: int | None = Field(default=None, ge=1, le=24 * 3600 * 1000)
    hops: int = Field(default=0, ge=0, le=64)
    trace_id: str | None = Field(default=None, max_length=128)
    # Who first made the call, signed (protocols/origin.py); absent from Go callers.
    origin: CallOrigin | None = None
    # W3C trace context of the caller's span, so a call through several nodes is one trace.
    traceparent: str | None = Field(default=None, pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")

    @field_validator("arguments", mode="before")
    @classmethod
    def _null_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v

    def flat_arguments(self) -> dict[str, Any]:
        """Arguments as one mapping, unwrapping the Go node's {args, params, secrets} shape."""
        args = self.arguments
        wrapped_keys = {"args", "params", "secrets"}
        if args and set(args) <= wrapped_keys and all(isinstance(v, dict) for v in args.values()):
            flat: dict[str, Any] = {}
            for key in ("params", "args", "secrets"):
                flat.update(args.get(key) or {})
            return flat
        return dict(args)


class ToolResponse(_WireModel):
    id: str
    result: ToolResult
    error: ErrorInfo | None = None

    @classmethod
    def failure(cls, request_id: str, code: int, message: str) -> ToolResponse:
        """Both `error` and an isError result, so a Go caller that reads only `result` sees it."""
        return cls(
            id=request_id,
            result=ToolResult.text(message, is_error=True),
            error=ErrorInfo(code=code, message=message),
        )
