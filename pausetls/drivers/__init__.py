"""Drivers: what runs a paused job on one concurrency model (gevent, OS threads, asyncio)."""
