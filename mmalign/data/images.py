"""Image bytes → RGB ``PIL.Image`` with checks, content keys, and encoding for the writers.

Mode conversion (``to_rgb``), chosen so that every source image ends up as 8-bit RGB that looks like it
did in a viewer:

* RGBA / LA / La / RGBa / PA and palette images with a transparency entry are alpha-composited **on a
  white background** (what image viewers and browsers show; a black background would turn transparent
  margins into dark borders the model would learn);
* 16-bit grayscale (``I;16*``) is rescaled 0..65535 → 0..255 (``value // 257``); 32-bit integer ``I``
  images are rescaled the same way when their maximum exceeds 255 (the 16-bit case), else taken as is;
  float ``F`` images in [0, 1] are scaled by 255, others clipped to [0, 255] (PIL's own ``convert`` would
  clip 16-bit data to white);
* everything else (``L``, ``1``, ``P`` without transparency, ``CMYK``, ``YCbCr``, ...) uses PIL's
  ``convert("RGB")``; 16-bit RGB PNGs are already reduced to 8 bits by PIL's decoder;
* EXIF orientation is applied (``ImageOps.exif_transpose``).
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps

DEFAULT_MIN_IMAGE_SIZE = 16
"""Default smallest accepted image side in pixels (the toy world renders 64×64)."""


class BadImageError(Exception):
    """An image that cannot be used; the message says why (the caller adds file/row/field)."""


def image_key(data: bytes) -> str:
    """Content key of an image: sha1 hex digest of its encoded bytes (used by the latent cache)."""
    return hashlib.sha1(data).hexdigest()


def encode_image(image: Image.Image | bytes | bytearray | str | os.PathLike, image_format: str = "PNG") -> bytes:
    """Bytes for a writer: PIL images are encoded (``PNG`` lossless by default; ``JPEG`` at quality 95),
    bytes pass through unchanged, a path is read as is."""
    if isinstance(image, bytes | bytearray):
        return bytes(image)
    if isinstance(image, str | os.PathLike):
        with open(image, "rb") as f:
            return f.read()
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, bytes or a path, got {type(image).__name__}")
    buffer = io.BytesIO()
    if image_format.upper() in ("JPEG", "JPG"):
        image.convert("RGB").save(buffer, format="JPEG", quality=95)
    else:
        image.save(buffer, format=image_format)
    return buffer.getvalue()


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB as described in the module docstring."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info or mode == "PA":
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image).astype(np.int64)
        if mode != "I" or values.max(initial=0) > 255:
            values = values // 257
        return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), mode="L").convert("RGB")
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        finite = values[np.isfinite(values)]
        if finite.size and finite.max() <= 1.0 and finite.min() >= 0.0:
            values = values * 255.0
        values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L").convert("RGB")
    return image.convert("RGB")


def decode_image(data: Any, *, min_image_size: int = DEFAULT_MIN_IMAGE_SIZE) -> Image.Image:
    """Decode encoded image bytes to a fully loaded RGB image or raise :class:`BadImageError`.

    Rejects bytes PIL cannot identify or fully decode, empty data, and images whose smaller side is below
    ``min_image_size`` pixels. Truncated files are always rejected: if another library switched PIL's global
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` on (which would pad them with gray), it is switched off around the
    decode and restored afterwards.
    """
    if not isinstance(data, bytes | bytearray) or len(data) == 0:
        raise BadImageError("empty image data" if not data else f"expected image bytes, got {type(data).__name__}")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if min(width, height) < min_image_size:
            raise BadImageError(f"image is {width}x{height}, smaller than min_image_size={min_image_size}")
        allow_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            image.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = allow_truncated
        if image.getexif().get(0x0112, 1) != 1:  # EXIF orientation; transposing copies, so only when needed
            image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except BadImageError:
        raise
    except Exception as exc:  # untrusted bytes: PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        raise BadImageError(f"cannot decode image ({type(exc).__name__}: {exc})") from exc
