"""The Perseus gRPC core: it owns the market data and serves it over gRPC."""
