"""The pausetls benchmark: pausetls (gevent, threads, thread pools) against gevent + stdlib ``ssl`` and nginx.

Run it as ``pausetls bench`` (or ``python -m bench`` from the checkout); ``--help`` lists the options.
Every server mode runs in a subprocess of its own, so its CPU time and memory
are its own; the load comes from other processes (gevent loops of stdlib
``ssl`` clients) whose CPU is reported next to the server's.  `run` is the
entry point; `plan` says which cells a profile measures and `cell` how one
cell is measured.
"""
