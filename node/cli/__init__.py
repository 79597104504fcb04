"""The `praxis-node` command: commands, output, talking to a running node, the demo."""
