"""The check that an event carries no picture, shared by the guard's and the webhooks' tests."""

from __future__ import annotations

from typing import Any


def assert_pixel_free(value: Any, where: str, *, max_string: int) -> None:
    """Nothing image-sized anywhere in an event: short strings, short lists, no bytes."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert_pixel_free(item, f"{where}.{key}", max_string=max_string)
    elif isinstance(value, list):
        assert len(value) <= 8, f"{where}: a list of {len(value)} items in an event"
        for i, item in enumerate(value):
            assert_pixel_free(item, f"{where}[{i}]", max_string=max_string)
    elif isinstance(value, str):
        assert len(value) <= max_string, f"{where}: a string of {len(value)} characters in an event"
    else:
        assert value is None or isinstance(value, (int, float, bool)), f"{where}: {type(value).__name__}"
