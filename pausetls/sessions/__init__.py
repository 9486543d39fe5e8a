"""TLS session resumption: the external session cache, sealing, and the stores it keeps sessions in."""
