"""`/praxis/card/1.0.0`: both sides write their own card first, then read the other's."""

from __future__ import annotations

from dataclasses import replace

from protocols.codec import parse_model
from protocols.errors import InvalidRequest
from protocols.messages import Card
from protocols.streams import ByteStream, WireLimits

CARD_PROTOCOL = "/praxis/card/1.0.0"
# A card is far smaller than a tool frame may be: 256 tools with modest schemas fit in 1 MiB.
MAX_CARD_BYTES = 1024 * 1024


async def exchange_cards(
    stream: ByteStream, own_card: Card, remote_peer_id: str, limits: WireLimits, deadline: float
) -> Card:
    """Send our card, receive the peer's, and check it names the authenticated peer.

    The caller owns the stream and ends it (close on success, reset on error).
    """
    framed = replace(limits, max_frame_bytes=min(limits.max_frame_bytes, MAX_CARD_BYTES)).framed(stream)
    await framed.write_json(own_card.to_wire(), deadline)
    card = parse_model(Card, await framed.read_json(deadline), "card")
    if card.peer_id != remote_peer_id:
        raise InvalidRequest(
            f"card refused: it claims peer ID {card.peer_id[:64]} but the connection "
            f"is authenticated as {remote_peer_id}"
        )
    return card
