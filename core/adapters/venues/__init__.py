"""Exchange adapters: one sans-I/O protocol per venue, one shared WebSocket runner.

A venue module (``coinbase.py``, ``binance.py``, ``kraken.py``) holds only a
:class:`~core.adapters.venues.base.VenueProtocol`: pure code that says which
frames to send after connecting and turns each received frame into market
events. :mod:`core.adapters.venues.runner` owns the connection: connect,
subscribe, read, heartbeat timeout, reconnect with backoff. ``sim`` is a
simulated venue with no network at all.
"""
