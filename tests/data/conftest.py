"""Tiny synthetic images for the data-reader tests (made with PIL, no files shipped)."""

import io

import pytest
from PIL import Image

COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (128, 0, 128), (255, 128, 0)]


def _solid(i: int, size: int = 32) -> Image.Image:
    """A solid RGB image with a distinct colour per ``i`` (and a marker pixel so every i differs)."""
    image = Image.new("RGB", (size, size), COLORS[i % len(COLORS)])
    image.putpixel((0, 0), (i % 256, (i // 256) % 256, 7))
    return image


@pytest.fixture
def solid():
    """``solid(i, size=32)``: a solid RGB image, distinct colour and marker pixel per ``i``."""
    return _solid


@pytest.fixture
def png_bytes():
    def encode(image: Image.Image, image_format: str = "PNG") -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=image_format)
        return buffer.getvalue()

    return encode


@pytest.fixture
def pickapic_rows():
    """Six Pick-a-Pic rows: labels 1, 0, 0.5 (tie), 1, 0, 1 with images 2k / 2k+1."""
    labels = [1, 0, 0.5, 1, 0, 1]
    return [
        {"caption": f"prompt {k}", "jpg_0": _solid(2 * k), "jpg_1": _solid(2 * k + 1), "label_0": label}
        for k, label in enumerate(labels)
    ]
