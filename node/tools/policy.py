"""Who may call which tool: by authenticated peer ID, and by the proven origin of a forwarded call."""

from __future__ import annotations

from dataclasses import dataclass

from node.config import PolicySection, ToolContract

ANY_PEER = "*"


@dataclass(frozen=True)
class Caller:
    front: str  # the peer whose connection carried the request
    origin: str  # who first made the call (== front unless forwarded)
    origin_proven: bool  # False: forwarded without proof; only tools open to everyone

    @property
    def forwarded(self) -> bool:
        return self.origin != self.front or not self.origin_proven


def may_call(contract: ToolContract, peer_id: str, policy: PolicySection) -> bool:
    """Deny lists win; then the tool's allow list, else the node default.

    A tool that runs a host process is callable by peers only when its own `allow_peers`
    names them: the node-wide default never opens a host process to the mesh.
    """
    if peer_id in contract.deny_peers or ANY_PEER in contract.deny_peers:
        return False
    if contract.allow_peers is not None:
        allowed = contract.allow_peers
    elif contract.engine == "process":
        return False
    else:
        allowed = policy.default_allow
    return ANY_PEER in allowed or peer_id in allowed


def may_call_as(contract: ToolContract, caller: Caller, policy: PolicySection) -> bool:
    """Policy for a call that may have been forwarded: the origin and the peer in front must
    both be allowed; an unproven origin only reaches tools open to everyone."""
    if not may_call(contract, caller.front, policy):
        return False
    if not caller.origin_proven:
        return may_call(contract, ANY_PEER, policy)
    return may_call(contract, caller.origin, policy)


def may_use_node(caller: Caller, policy: PolicySection) -> bool:
    """Whether this node serves `caller` at all beyond its own tools (forwarding, shared MCP
    servers): the node default applies to the origin and to the peer in front."""
    allowed = policy.default_allow
    if ANY_PEER in allowed:
        return True
    return caller.origin_proven and caller.front in allowed and caller.origin in allowed
