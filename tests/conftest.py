"""Shared fixtures: natural photos (scikit-image's bundled, permissively licensed samples)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skimage.data")

from livesafe import synthetic  # noqa: E402  (needs scikit-image)


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    return {**synthetic.blocked_images(), **synthetic.benign_images()}
