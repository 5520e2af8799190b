"""Every image mode becomes 8-bit RGB as documented in mmalign.data.images (RGBA on white, 16-bit rescaled)."""

import io

import numpy as np
import pytest
from PIL import Image

from mmalign.data import decode_image, load_preference_data, to_rgb, write_pickapic_parquet


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_rgba_is_composited_on_white():
    image = Image.new("RGBA", (20, 20), (0, 0, 0, 0))  # fully transparent black
    image.putpixel((1, 1), (255, 0, 0, 255))  # opaque red
    image.putpixel((2, 2), (255, 0, 0, 128))  # half-transparent red
    rgb = decode_image(encode(image))
    assert rgb.mode == "RGB"
    assert rgb.getpixel((10, 10)) == (255, 255, 255)
    assert rgb.getpixel((1, 1)) == (255, 0, 0)
    r, g, b = rgb.getpixel((2, 2))
    assert r == 255 and abs(g - 127) <= 1 and abs(b - 127) <= 1


def test_la_and_palette_with_transparency():
    la = Image.new("LA", (20, 20), (0, 0))
    assert decode_image(encode(la)).getpixel((3, 3)) == (255, 255, 255)
    palette = Image.new("P", (20, 20), 0)
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.putpixel((4, 4), 1)
    plain = decode_image(encode(palette))
    assert plain.getpixel((0, 0)) == (10, 20, 30) and plain.getpixel((4, 4)) == (200, 100, 50)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", transparency=0)  # index 0 transparent
    transparent = decode_image(buffer.getvalue())
    assert transparent.getpixel((0, 0)) == (255, 255, 255) and transparent.getpixel((4, 4)) == (200, 100, 50)


def test_grayscale_cmyk_and_one_bit():
    assert decode_image(encode(Image.new("L", (20, 20), 77))).getpixel((0, 0)) == (77, 77, 77)
    assert decode_image(encode(Image.new("1", (20, 20), 1))).getpixel((0, 0)) == (255, 255, 255)
    cmyk = decode_image(encode(Image.new("CMYK", (20, 20), (0, 255, 255, 0)), "JPEG"))
    r, g, b = cmyk.getpixel((5, 5))
    assert cmyk.mode == "RGB" and r > 240 and g < 15 and b < 15  # pure red survives the JPEG round trip


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_grayscale_is_rescaled_not_clipped(fmt):
    values = np.full((20, 20), 32896, dtype=np.uint16)  # 128 * 257: mid gray in 16 bits
    values[0, 0] = 65535
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    rgb = decode_image(encode(image, fmt))
    assert rgb.getpixel((5, 5)) == (128, 128, 128) and rgb.getpixel((0, 0)) == (255, 255, 255)


def test_int32_and_float_modes():
    assert to_rgb(Image.fromarray(np.full((4, 4), 65535, dtype=np.int32), mode="I")).getpixel((0, 0)) == (255,) * 3
    assert to_rgb(Image.fromarray(np.full((4, 4), 200, dtype=np.int32), mode="I")).getpixel((0, 0)) == (200,) * 3
    assert to_rgb(Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), mode="F")).getpixel((0, 0)) == (128,) * 3


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    assert decode_image(buffer.getvalue()).size == (20, 40)


def test_modes_through_the_dataset(tmp_path):
    rgba = Image.new("RGBA", (24, 24), (0, 0, 255, 0))
    gray = Image.new("L", (24, 24), 40)
    rows = [{"caption": "modes", "jpg_0": rgba, "jpg_1": gray, "label_0": 0}]
    item = load_preference_data(write_pickapic_parquet(rows, tmp_path / "m.parquet"))[0]
    assert item["chosen"].mode == item["rejected"].mode == "RGB"
    assert item["chosen"].getpixel((0, 0)) == (40, 40, 40) and item["rejected"].getpixel((0, 0)) == (255, 255, 255)
