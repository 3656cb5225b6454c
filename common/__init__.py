"""Code the core and the gateways both use: wire-level helpers with no service logic and no state of Perseus."""
