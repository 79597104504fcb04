"""What a node does to keep its place in the mesh, counted since it started.

Connections opened and closed, dials made to stay connected, card exchanges, DHT walks and
card announcements: the work that grows with the mesh rather than with the calls, which the
per-call figures of `/metrics` do not show. (200 nodes idle on two cores: each node applied 1 to
1.8 announcements a second, each received about four times, while the whole mesh opened 1 to 13
connections a second.) Plain counters, bumped by the parts that do the work and read when
`/metrics` is scraped (`ActivityCollector`); nothing here is a secret or a tool argument.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

# (metric name, help, label, the label values always exported); the `MeshActivity` field is the
# name without `praxis_`. A counter not bumped yet reads 0, so a rate over a scrape window needs
# no special case for a series that appears.
FAMILIES = (
    ("praxis_connections_opened", "Connections to peers opened, by who dialled (unknown: libp2p did not say)",
     "direction", ("inbound", "outbound")),
    ("praxis_connections_closed", "Peers whose last connection closed, by why: pruned for a connection bound "
     "(this node's or the peer's, p2p.max_peers) or any other reason", "reason", ("pruned", "other")),
    ("praxis_peer_dials", "Dials made to stay connected (bootstrap peers, p2p.min_peers, mDNS, peer exchange), "
     "by outcome", "outcome", ("ok", "failed")),
    ("praxis_card_exchanges", "Card exchanges (/praxis/card/1.0.0), by who started them", "started_by",
     ("this_node", "peer")),
    ("praxis_dht_walks", "Kademlia walks this node started, by purpose: providing its tools or looking one up",
     "purpose", ("provide", "lookup")),
    ("praxis_announcements", "Card announcements over GossipSub: this node's published, peers' applied, "
     "peers' dropped by the topic validator", "event", ("published", "applied", "dropped")),
)


@dataclass
class MeshActivity:
    """One counter per family of `FAMILIES` (the field is its name without `praxis_`), by label value."""

    connections_opened: Counter[str] = field(default_factory=Counter)
    connections_closed: Counter[str] = field(default_factory=Counter)
    peer_dials: Counter[str] = field(default_factory=Counter)
    card_exchanges: Counter[str] = field(default_factory=Counter)
    dht_walks: Counter[str] = field(default_factory=Counter)
    announcements: Counter[str] = field(default_factory=Counter)


class ActivityCollector:
    """The activity counters as Prometheus counters, read when scraped."""

    def __init__(self, activity: MeshActivity) -> None:
        self.activity = activity

    def collect(self) -> Iterator[Metric]:
        for name, documentation, label, values in FAMILIES:
            counts: Counter[str] = getattr(self.activity, name.removeprefix("praxis_"))
            family = CounterMetricFamily(name, documentation, labels=(label,))
            for value in dict.fromkeys((*values, *counts)):  # the fixed values, then any other counted
                family.add_metric((value,), counts[value])
            yield family


__all__ = ["FAMILIES", "ActivityCollector", "MeshActivity"]
