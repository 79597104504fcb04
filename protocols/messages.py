"""Pydantic models of every message on the praxis wire protocols (DESIGN.md section 4).

Field names follow the reference Go node (camelCase on the wire). Models accept unknown
fields from peers (the Go node may add some) but only ever emit the fields declared here.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ParamType = Literal["string", "number", "boolean", "object", "array"]


def now_ms() -> int:
    return int(time.time() * 1000)


class _WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ToolParameter(_WireModel):
    name: str = Field(min_length=1, max_length=128)
    type: ParamType = "string"
    description: str = ""
    required: bool = False


class ToolSpec(_WireModel):
    """A tool as advertised in a card."""

    name: str = Field(min_length=1, max_length=128)
    description: str = ""
    parameters: list[ToolParameter] = Field(default_factory=list)
    # Python-node extensions; the Go node ignores them.
    input_schema: dict[str, Any] | None = Field(default=None, alias="inputSchema")
    idempotent: bool | None = None

    @field_validator("parameters", mode="before")
    @classmethod
    def _null_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v


class Card(_WireModel):
    name: str = Field(max_length=256)
    version: str = Field(default="", max_length=64)
    peer_id: str = Field(alias="peerId", min_length=1, max_length=128)
    capabilities: list[str] = Field(default_factory=list)
    tools: list[ToolSpec] = Field(default_factory=list)
    timestamp: int = Field(default_factory=now_ms)
    # Python-node extension: where the peer listens, so others can dial it (Go ignores it).
    addrs: list[str] = Field(default_factory=list, max_length=16)

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


class ToolRequest(_WireModel):
    id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=128)
    arguments: dict[str, Any] = Field(default_factory=dict)
    timestamp: int = Field(default_factory=now_ms)
    # Python-node extensions (DESIGN.md section 4).
    deadline_ms: int | None = Field(default=None, ge=1, le=24 * 3600 * 1000)
    hops: int = Field(default=0, ge=0, le=64)
    trace_id: str | None = Field(default=None, max_length=128)

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
