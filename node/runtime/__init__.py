"""Trio building blocks every layer uses: change signals, isolated tasks, rate windows."""
