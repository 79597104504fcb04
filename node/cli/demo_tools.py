"""Small built-in tools (the `python` engine) that the demo mesh and examples use."""

from __future__ import annotations

import hashlib
from typing import Any


def word_count(text: str) -> dict[str, Any]:
    return {"words": len(text.split())}


def reverse(text: str) -> str:
    return text[::-1]


def uppercase(text: str) -> str:
    return text.upper()


def add(a: float, b: float) -> dict[str, Any]:
    return {"sum": a + b}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def noop() -> str:
    return ""
