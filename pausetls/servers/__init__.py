"""Servers and clients: the fronts that accept or open connections and drive the core through a driver."""
