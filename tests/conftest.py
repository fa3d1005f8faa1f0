"""Shared fixtures: natural photos (scikit-image's bundled, permissively licensed samples)."""

from __future__ import annotations

import numpy as np
import pytest

skimage_data = pytest.importorskip("skimage.data")

PHOTO_NAMES = (
    "astronaut", "camera", "chelsea", "coffee", "coins", "hubble_deep_field",
    "immunohistochemistry", "moon", "rocket", "retina", "brick", "grass", "gravel", "cell",
)


def load_photo(name: str) -> np.ndarray:
    """An RGB uint8 photo from scikit-image's bundled data."""
    image = getattr(skimage_data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    return {name: load_photo(name) for name in PHOTO_NAMES}
