"""Bridging py-libp2p's mDNS discovery (zeroconf's thread) into the node's trio loop.

The library announces discovered peers through a module-level handler list, from a
zeroconf thread. `MdnsBridge` registers a handler for the node's lifetime that hands each
discovery to trio through the loop's token, and dials it from a trio task.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.peer.peerinfo import PeerInfo

log = logging.getLogger("praxis.mdns")
QUEUE_SIZE = 64


class MdnsBridge:
    def __init__(self, own_peer_id: str, dial: Callable[[PeerInfo], Awaitable[None]]) -> None:
        self.own_peer_id = own_peer_id
        self.dial = dial

    # `Any`: the trio-typing stubs that py-libp2p pulls in shadow trio's own TaskStatus type.
    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        send, receive = trio.open_memory_channel[PeerInfo](QUEUE_SIZE)
        token = trio.lowlevel.current_trio_token()

        def deliver(info: PeerInfo) -> None:  # runs in the trio loop
            try:
                send.send_nowait(info)
            except (trio.WouldBlock, trio.ClosedResourceError):
                log.debug("mDNS discovery of %s dropped (queue full or closed)", info.peer_id)

        def on_discovered(info: PeerInfo) -> None:  # runs on zeroconf's thread
            if info.peer_id.to_string() == self.own_peer_id:
                return
            try:
                token.run_sync_soon(deliver, info)
            except trio.RunFinishedError:
                return

        peerDiscovery.register_peer_discovered_handler(on_discovered)
        try:
            task_status.started()
            async with receive:
                async for info in receive:
                    log.info("mDNS discovered %s", info.peer_id)
                    await self.dial(info)
        finally:
            peerDiscovery.unregister_peer_discovered_handler(on_discovered)
            send.close()
