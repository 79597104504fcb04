"""`/praxis/prune/1.0.0` (a Python-node extension): "I am closing our connection to keep to my
connection bound; I am not leaving the mesh."

go-libp2p says this with the yamux GO_AWAY code 0x1005 ("connection garbage collected");
py-libp2p 0.8.1 sends only code 0 and does not expose the code it receives. Without a notice a
pruned peer cannot tell a prune from a crash, and a crashed peer must stop being offered within
seconds: so it dropped the pruner's tools from its listing until the pruner's next announcement,
and listings flapped while connections churned.

The pruning side opens a stream on the connection it is about to close and waits, at most
`NOTICE_TIMEOUT`, for the other side to close it: the other side closes it once it has taken
note. Then the pruning side closes the connection. No bytes are sent either way. A peer that
does not speak the protocol (the Go node) refuses it; its connection is closed all the same.
"""

PRUNE_PROTOCOL = "/praxis/prune/1.0.0"
# Seconds the pruning side waits for the other side to take note: a stream open, milliseconds
# between idle nodes. With 30 nodes sharing one trio loop, 260 of 416 notices took over 1 s (the
# bound before), and each one cut short was taken for a crash at the other end: the pruner's
# card dropped there until its next announcement, a period later (29 s among 30 nodes).
NOTICE_TIMEOUT = 5.0
