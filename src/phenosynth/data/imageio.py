"""Safe image decoding: the one place every stage reads an image file.

EXIF orientation is applied; CMYK, 16-bit, 32-bit, float, grayscale, palette and alpha images are converted to 8-bit
RGB (alpha composited on white); decompression bombs, empty, truncated and non-image files raise
:class:`ImageDecodeError` with a reason a user can read.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Default decompression-bomb limit in pixels (width x height); configurable per call and by `--max-pixels`.
DEFAULT_MAX_PIXELS = 64_000_000


class ImageDecodeError(Exception):
    """A file that is not a usable image: ``reason`` is a short category, ``str(exc)`` the full explanation."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class DecodedImage:
    """What ingest needs to know about one file."""

    image_id: str  # SHA-256 of the file bytes
    width: int
    height: int
    mode: str  # PIL mode of the file before conversion
    phash: str  # 64-bit perceptual hash of the converted image, hex


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode; alpha composited on white; 16/32-bit and float rescaled by their range."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        lo = 0.0 if mode.startswith("I;16") else min(float(arr.min()), 0.0)
        arr8 = np.clip((arr - lo) / (hi - lo) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, RGBX


def _open_checked(data: bytes, max_pixels: int) -> tuple[Image.Image, str]:
    """Open ``data`` lazily and check its header size against ``max_pixels`` before decoding any pixel.

    The limit is this call's alone: PIL's process-wide ``Image.MAX_IMAGE_PIXELS`` is never changed. PIL's own
    warning (above that limit) is silenced for this call, and PIL's own hard error (above twice that limit, a
    ceiling no ``max_pixels`` can lift) is reported with the same reason, ``decompression-bomb``.
    """
    if not data:
        raise ImageDecodeError("empty-file", "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageDecodeError("not-an-image", "not an image: format not recognised") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("decompression-bomb", f"decompression bomb: {exc} (Pillow's own limit)") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a reason, not a crash
        raise ImageDecodeError("not-an-image", f"not an image: {exc}") from None
    width, height = img.size
    if width * height > max_pixels:
        raise ImageDecodeError(
            "decompression-bomb",
            f"decompression bomb: {width}x{height} = {width * height:,} pixels exceeds the limit of "
            f"{max_pixels:,} (raise it with --max-pixels)"
        )
    if width == 0 or height == 0:
        raise ImageDecodeError("not-an-image", "not an image: zero width or height")
    original_mode = img.mode
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
    except OSError as exc:
        text = str(exc)
        truncated = "truncated" in text.lower() or "broken data" in text.lower()
        reason = "truncated-image" if truncated else "corrupt-image"
        raise ImageDecodeError(reason, f"{reason.replace('-', ' ')}: {text}") from None
    except Exception as exc:  # noqa: BLE001
        raise ImageDecodeError("corrupt-image", f"corrupt image: {exc}") from None
    return img, original_mode


def decode_rgb_bytes(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """Decode file bytes to an upright 8-bit RGB array ``(H, W, 3)``; also return the file's original PIL mode."""
    img, original_mode = _open_checked(data, max_pixels)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block leaves the image as stored
        pass
    rgb = _to_rgb(img)
    return np.asarray(rgb, dtype=np.uint8).copy(), original_mode


def load_rgb(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as an upright 8-bit RGB array ``(H, W, 3)``; raises :class:`ImageDecodeError`."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError("unreadable", f"cannot read file: {exc.strerror or exc}") from None
    return decode_rgb_bytes(data, max_pixels=max_pixels)[0]


def inspect_bytes(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Fully decode ``data`` (so truncation is caught) and describe it for the manifest."""
    rgb, mode = decode_rgb_bytes(data, max_pixels=max_pixels)
    phash = str(imagehash.phash(Image.fromarray(rgb)))
    return DecodedImage(
        image_id=sha256_bytes(data), width=int(rgb.shape[1]), height=int(rgb.shape[0]), mode=mode, phash=phash
    )
