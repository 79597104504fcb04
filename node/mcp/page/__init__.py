"""The live mesh page, `GET /` on the node's HTTP port (node/mcp/endpoint.py routes it).

One file, `mesh.html`, shipped in this package (pyproject's package data): its CSS and its
script are inline, it loads nothing else and polls `status` (the node's `GET /status`) every
1.5 s. Names in it come from peers: the script only ever sets text (`textContent`, text nodes,
plain attributes), never HTML.

The page is sent with a Content-Security-Policy that allows exactly that: nothing by default,
the one inline script and the one inline style by their SHA-256 hashes (computed here from the
file, so an edit of the file cannot get out of step with the header, and no nonce is needed
for a page that never changes), `connect-src 'self'` for the polling, `img-src data:` for the
inline icon, Trusted Types required (an `innerHTML` assignment would throw), no framing, no
base URL, no forms; and `X-Content-Type-Options: nosniff`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

PAGE_FILE = "mesh.html"
_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
_STYLE = re.compile(r"<style>(.*?)</style>", re.DOTALL)


@dataclass(frozen=True)
class Page:
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...]  # besides content type, length and cache control
    content_type: bytes = b"text/html; charset=utf-8"


def _sha256(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


def content_security_policy(html: str) -> str:
    """The page's policy: its one inline script and one inline style, by hash; nothing else
    but requests to its own origin (the polling)."""
    scripts, styles = _SCRIPT.findall(html), _STYLE.findall(html)
    if len(scripts) != 1 or len(styles) != 1:
        raise ValueError(f"{PAGE_FILE}: expected one inline <script> and one <style>, "
                         f"found {len(scripts)} and {len(styles)}")
    return "; ".join([
        "default-src 'none'",
        f"script-src {_sha256(scripts[0])}",
        f"style-src {_sha256(styles[0])}",
        "connect-src 'self'",
        "img-src data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ])


@cache
def mesh_page() -> Page:
    """The page and its headers (read from the package once)."""
    body = files(__name__).joinpath(PAGE_FILE).read_bytes()
    csp = content_security_policy(body.decode())
    return Page(body, (
        (b"content-security-policy", csp.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
    ))


__all__ = ["Page", "content_security_policy", "mesh_page"]
