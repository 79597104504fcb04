"""What this node runs: its tools, their arguments and policy, and the engines."""
