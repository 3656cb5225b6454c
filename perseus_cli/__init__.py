"""The ``perseus`` command line and the developer stack (``perseus up``).

The one package that imports both sides: ``core`` and ``gateways`` are peers that never import each other,
and each subcommand imports its implementation only when chosen.
"""
