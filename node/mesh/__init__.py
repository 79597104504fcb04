"""The mesh: libp2p host, identity, dialling, discovery, the peer directory, card and peer
exchange, links to peers, routing and serving calls."""
