"""Safe image decoding.

Every image the backend or the trainer looks at goes through :func:`decode_image`: a pixel limit
checked from the header before any pixel is decoded, truncation detected even though the
``megadetector`` package switches Pillow's ``LOAD_TRUNCATED_IMAGES`` on for the whole process, EXIF
orientation applied (so boxes line up with what the browser shows) and RGB output.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Callable

from PIL import Image, ImageOps, UnidentifiedImageError

from backend.errors import ImageError

logger = logging.getLogger(__name__)


class _EofTrackingBytesIO(io.BytesIO):
    """A BytesIO that remembers whether a reader asked for bytes past the end.

    A decoder that still wants data at the end of the buffer means the file is truncated; this
    works whatever ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is set to.
    """

    ran_dry = False

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if not data and size != 0:
            self.ran_dry = True
        return data


def decode_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode image bytes into an EXIF-transposed RGB image.

    Args:
        data: The encoded file (JPEG, PNG, ...).
        max_pixels: Largest accepted width x height, checked before decoding.

    Returns:
        A fully loaded RGB ``PIL.Image.Image``.

    Raises:
        ImageError: the bytes are empty, not an image, truncated, corrupt or too large.
    """
    if not data:
        raise ImageError("the image is empty (0 bytes)")
    buffer = _EofTrackingBytesIO(data)
    try:
        image = _pil_open()(buffer)
    except UnidentifiedImageError as exc:
        raise ImageError(f"not an image file ({len(data)} bytes, starting {data[:8]!r})") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"the image is too large to decode: {exc}") from exc
    except Exception as exc:  # decoders raise many types (OSError, ValueError, SyntaxError, struct.error...)
        raise ImageError(f"unreadable image header: {exc}") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageError(f"the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            f"the image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
            "(MAX_IMAGE_PIXELS)"
        )
    try:
        image.load()
    except Exception as exc:  # same as above: any decoder failure fails this image only
        raise ImageError(f"the image data is corrupt or truncated: {exc}") from exc
    if buffer.ran_dry:
        raise ImageError(f"the image file is truncated ({len(data)} bytes)")
    try:
        image = ImageOps.exif_transpose(image) or image
    except (OSError, ValueError, SyntaxError) as exc:
        logger.warning("ignoring unreadable EXIF orientation: %s", exc)
    return image.convert("RGB") if image.mode != "RGB" else image


def _pil_open() -> Callable[..., Image.Image]:
    """Pillow's own ``Image.open``, bypassing the wrapper ``ultralytics`` installs on import.

    That wrapper reacts to an unidentified file by trying to install ``pi-heif`` (a network call);
    a non-image upload must just fail.
    """
    opener = Image.open
    if opener.__module__ != Image.__name__:
        original = getattr(sys.modules.get(opener.__module__), "_image_open", None)
        if callable(original):
            return original
    return opener
