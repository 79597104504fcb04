"""Who may call which tool, by authenticated peer ID (DESIGN.md section 7)."""

from __future__ import annotations

from node.config import PolicySection, ToolContract

ANY_PEER = "*"


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
