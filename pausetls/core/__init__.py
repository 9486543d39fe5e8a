"""The core: the OpenSSL binding, the job (pause) runtime, `Context` and `TLSSocket`.

Nothing here imports an event loop (tests/core/test_boundary.py checks it): a loop reaches the core
only through a `Driver` (`_driver.py`).
"""
