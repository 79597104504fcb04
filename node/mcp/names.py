"""The naming rule: every mesh tool gets an MCP name matching `[A-Za-z0-9_-]{1,64}`."""

from __future__ import annotations

import hashlib
import logging
import re

log = logging.getLogger("praxis.mcp.server")

MAX_NAME = 64
_VALID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_INVALID_CHAR = re.compile(r"[^A-Za-z0-9_-]")


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:8]


def is_mcp_name(name: str) -> bool:
    """Is `name` a valid MCP tool name (and so its own mesh name, when the mesh has it)?"""
    return _VALID.fullmatch(name) is not None


def mcp_names(mesh_names: list[str] | set[str]) -> dict[str, str]:
    """MCP name -> mesh name, for every mesh tool. Deterministic for a given set of names.

    1. A mesh name that already matches `[A-Za-z0-9_-]{1,64}` is used unchanged.
    2. Any other name has each character outside that set replaced by `_`; if it is longer
       than 64 it is cut to 55 characters plus `_` and the first 8 hex digits of the SHA-256
       of the original name.
    3. When that result is already taken (by a rule-1 name or an earlier rule-2 name, in
       sorted order of the original names), it becomes its first 55 characters plus `_` and
       the 8-hex-digit SHA-256 prefix of the original name.
    """
    out: dict[str, str] = {}
    rest = []
    for name in sorted(mesh_names):
        if _VALID.fullmatch(name):
            out[name] = name
        else:
            rest.append(name)
    for name in rest:
        candidate = _INVALID_CHAR.sub("_", name) or "tool"
        if len(candidate) > MAX_NAME:
            candidate = f"{candidate[:55]}_{_digest(name)}"
        if candidate in out:
            candidate = f"{candidate[:55]}_{_digest(name)}"
        if candidate in out:  # astronomically unlikely: a SHA-256 prefix collision
            log.warning("MCP endpoint: tool %r cannot get a unique name; not listed", name)
            continue
        out[candidate] = name
    return out
