"""CPython's cyclic garbage collector, set for a process that runs nodes for hours.

The interpreter collects its youngest generation every 700 container allocations (thresholds
700, 10, 10): right for a short script, not for a node, whose connections, streams, pubsub
messages and MCP requests allocate tens of thousands of objects a second, nearly all freed by
reference counting anyway. Measured on CPython 3.11, 25 nodes in one process (as
`scripts/bench-scale --mode packed` runs them; `praxis-node demo` runs up to 16), 600k objects:
with those thresholds the collector took 18-25% of the process's CPU, at rest and under calls
(6-7 young collections a second at rest), and each full collection stopped every node in the
process for about 300 ms. With `THRESHOLDS` it took 0-7%, the same 1,000 calls used 14-53% less
CPU (three paired runs), and the largest RSS rose from 224 to 227-234 MiB. `/metrics` shows the collector's work
(`python_gc_collections_total`, by generation).
"""

from __future__ import annotations

import gc

# Young generation every 50,000 allocations net of frees; the middle one every 20 young ones;
# the oldest every 10 middle ones (and, as always, only once a quarter of it is new).
THRESHOLDS = (50_000, 20, 10)


def tune_for_a_long_running_node() -> None:
    """Set the collector's thresholds; once, before the node starts (the setting is the process's)."""
    gc.set_threshold(*THRESHOLDS)
