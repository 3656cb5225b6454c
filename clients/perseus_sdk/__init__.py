"""The Perseus Python SDK."""
