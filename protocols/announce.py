"""The GossipSub topic `/praxis/cards/1.0.0`: a node announces its own card.

One message is one compact JSON object, published by the node whose card it carries (GossipSub
signs it with that node's key; a receiver checks the card names the signer):

    {"card": {...the /praxis/card/1.0.0 card...}, "leaving": false, "seq": 7, "ttl": 50}

`leaving: true` says the node is stopping: its tools are withdrawn everywhere at once. `ttl` is
how long (seconds) receivers keep the card without a newer announcement: the publisher chooses
it with its announcement period (which grows with the mesh); a `ttl` outside `MIN_TTL_SECONDS`
.. `MAX_TTL_SECONDS` makes the announcement invalid; without one a receiver uses its own
`p2p.announce_ttl_seconds`.

A card too big for one announcement (over `MAX_ANNOUNCEMENT_BYTES`) is not announced: peers fetch
it over `/praxis/card/1.0.0` when they connect or when the DHT names the node as a provider.
"""

from __future__ import annotations

from pydantic import Field

from protocols.codec import decode_json, encode_json, parse_model
from protocols.errors import InvalidRequest, TooLarge
from protocols.messages import Card, _WireModel

CARDS_TOPIC = "/praxis/cards/1.0.0"
MAX_ANNOUNCEMENT_BYTES = 256 * 1024
ANNOUNCEMENT_DEPTH = 48
MIN_TTL_SECONDS = 1.0
MAX_TTL_SECONDS = 3600.0  # a card a receiver keeps past its publisher's silence, at most


class Announcement(_WireModel):
    card: Card
    leaving: bool = False
    seq: int = Field(default=0, ge=0)  # the publisher's announcement counter (unknown keys are ignored)
    ttl: float | None = Field(default=None, ge=MIN_TTL_SECONDS, le=MAX_TTL_SECONDS)


def encode_announcement(card: Card, *, leaving: bool = False, seq: int = 0, ttl: float | None = None) -> bytes:
    """The message bytes; raises TooLarge when the card does not fit one announcement."""
    if ttl is not None:
        ttl = round(min(max(ttl, MIN_TTL_SECONDS), MAX_TTL_SECONDS), 1)
    data = encode_json(Announcement(card=card, leaving=leaving, seq=seq, ttl=ttl).to_wire())
    if len(data) > MAX_ANNOUNCEMENT_BYTES:
        raise TooLarge(f"card of {len(data)} bytes is larger than one announcement ({MAX_ANNOUNCEMENT_BYTES})")
    return data


def decode_announcement(data: bytes, signer: str) -> Announcement:
    """Parse and check one message from `signer` (GossipSub's authenticated `from`)."""
    if len(data) > MAX_ANNOUNCEMENT_BYTES:
        raise TooLarge(f"announcement of {len(data)} bytes (at most {MAX_ANNOUNCEMENT_BYTES})")
    announcement = parse_model(Announcement, decode_json(data.rstrip(b"\n"), ANNOUNCEMENT_DEPTH), "announcement")
    if announcement.card.peer_id != signer:
        raise InvalidRequest("announcement refused: its card names another peer than its signer")
    return announcement
