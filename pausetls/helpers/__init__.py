"""Helpers that hooks use: AIA chain fetching, on-demand certificates, a small HTTP GET."""
