"""The GossipSub topic `/praxis/cards/1.0.0`: a node announces its own card.

One message is one compact JSON object, published by the node whose card it carries (GossipSub
signs it with that node's key; a receiver checks the card names the signer):

    {"card": {...the /praxis/card/1.0.0 card...}, "leaving": false}

`leaving: true` says the node is stopping: its tools are withdrawn everywhere at once. A card
too big for one announcement (over `MAX_ANNOUNCEMENT_BYTES`) is not announced: peers fetch it
over `/praxis/card/1.0.0` when they connect or when the DHT names the node as a provider.
"""

from __future__ import annotations

from pydantic import Field

from protocols.codec import decode_json, encode_json, parse_model
from protocols.errors import InvalidRequest, TooLarge
from protocols.messages import Card, _WireModel

CARDS_TOPIC = "/praxis/cards/1.0.0"
MAX_ANNOUNCEMENT_BYTES = 256 * 1024
ANNOUNCEMENT_DEPTH = 48


class Announcement(_WireModel):
    card: Card
    leaving: bool = False
    seq: int = Field(default=0, ge=0)  # the publisher's announcement counter (unknown keys are ignored)


def encode_announcement(card: Card, *, leaving: bool = False, seq: int = 0) -> bytes:
    """The message bytes; raises TooLarge when the card does not fit one announcement."""
    data = encode_json(Announcement(card=card, leaving=leaving, seq=seq).to_wire())
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
