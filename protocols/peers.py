"""`/praxis/peers/1.0.0` (a Python-node extension): "who else do you know?".

The responder writes one frame listing the peers in its directory with the listen
addresses their cards advertise, then closes. Nodes use it to grow a full mesh from one
bootstrap peer; the CLI uses it for `praxis-node peers`.
"""

from __future__ import annotations

from libp2p.peer.id import ID
from pydantic import Field, field_validator

from protocols.codec import parse_model
from protocols.messages import Addr, ToolSpec, _WireModel
from protocols.streams import ByteStream, WireLimits

PEERS_PROTOCOL = "/praxis/peers/1.0.0"
MAX_PEERS_LISTED = 256


class PeerRecord(_WireModel):
    peer_id: str = Field(alias="peerId", min_length=1, max_length=128)
    name: str = Field(default="", max_length=256)
    addrs: list[Addr] = Field(default_factory=list, max_length=16)
    tools: list[ToolSpec] = Field(default_factory=list)

    @field_validator("peer_id")
    @classmethod
    def _valid_peer_id(cls, v: str) -> str:
        # A peer list is a peer's word: a listed ID that is not a real peer ID is refused here,
        # before anything (a dial, a lookup) acts on it.
        try:
            ID.from_base58(v)
        except Exception:  # base58 and multihash errors of several types
            raise ValueError("not a valid peer ID") from None
        return v


class PeerList(_WireModel):
    peers: list[PeerRecord] = Field(default_factory=list, max_length=MAX_PEERS_LISTED)


async def send_peer_list(stream: ByteStream, peers: PeerList, limits: WireLimits, deadline: float) -> None:
    await limits.framed(stream).write_json(peers.to_wire(), deadline)


async def read_peer_list(stream: ByteStream, limits: WireLimits, deadline: float) -> PeerList:
    return parse_model(PeerList, await limits.framed(stream).read_json(deadline), "peer list")
