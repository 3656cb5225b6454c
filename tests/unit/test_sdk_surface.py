"""The SDK's curated public surface: explicit, importable, and not the generated module's."""

from __future__ import annotations

import perseus_sdk


def test_all_names_exist() -> None:
    missing = [name for name in perseus_sdk.__all__ if not hasattr(perseus_sdk, name)]
    assert missing == []


def test_all_is_sorted_and_has_the_stubs_of_every_service() -> None:
    assert perseus_sdk.__all__ == sorted(perseus_sdk.__all__)
    for stub in ("MarketDataServiceStub", "IngestServiceStub", "StreamServiceStub", "KeyServiceStub"):
        assert stub in perseus_sdk.__all__


def test_generated_internals_are_not_exported() -> None:
    assert "Visibility" not in perseus_sdk.__all__  # a contract option, not an SDK type
    assert not any(name.startswith("_") for name in perseus_sdk.__all__)
