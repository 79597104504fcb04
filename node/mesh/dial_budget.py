"""How many dials the peer lists that peers send may cause (peer exchange is their word).

A list names peers and addresses; each dial it causes costs this node a TCP connect and a
handshake, and is aimed at an address the list's sender chose. So every dial is budgeted:
per list, per source peer, per target address and host, and in total, per minute.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from node.runtime.rate import RateWindow

PER_LIST = 8  # dials one peer list may cause
PER_SOURCE_PER_MINUTE = 16  # dials all lists from one peer may cause
PER_ADDRESS_PER_MINUTE = 1  # dials of one host:port
PER_HOST_PER_MINUTE = 16  # dials of one host, whatever the port (a local mesh shares 127.0.0.1)
TOTAL_PER_MINUTE = 64  # dials caused by all peer lists together


@dataclass
class DialBudget:
    source: RateWindow = field(default_factory=lambda: RateWindow(PER_SOURCE_PER_MINUTE))
    address: RateWindow = field(default_factory=lambda: RateWindow(PER_ADDRESS_PER_MINUTE))
    host: RateWindow = field(default_factory=lambda: RateWindow(PER_HOST_PER_MINUTE))
    total: RateWindow = field(default_factory=lambda: RateWindow(TOTAL_PER_MINUTE))

    def allow(self, source_peer: str, host: str, port: str) -> bool:
        """Spend one dial of each budget, or none when any of them is used up."""
        checks = [(self.total, "all"), (self.source, source_peer), (self.host, host),
                  (self.address, f"{host}:{port}")]
        # Check before taking, so a refused dial costs no budget.
        if any(not _has_room(window, key) for window, key in checks):
            return False
        return all(window.try_take(key) for window, key in checks)


def _has_room(window: RateWindow, key: str) -> bool:
    return window.remaining(key) > 0
