"""MCP both ways: the client pool, forwarded servers, and this node's MCP endpoint."""
