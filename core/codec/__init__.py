"""Protobuf ↔ domain: the one place where domain records become contract messages and back.

``messages`` maps records to and from messages (the rpc layer's answers, the
stored candle members); ``events`` builds the ``StreamEvent`` bytes the
publishers send; ``timestamps`` is the one conversion between epoch
milliseconds and ``google.protobuf.Timestamp``. Pure mapping: no I/O, and no
import of adapters or rpc, so both can use it.
"""
