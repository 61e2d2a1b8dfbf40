"""Image files to pixels: the package's one image reader (`read_image`) and its load-time check (`check_image`).

Every path that turns an image file into pixels uses `read_image`: the Pascal VOC
and COCO JSON loaders (inside tf.data), `ipg_keras.inference.predict_image` and
`ipg-predict`, and the int8 calibration images of `ipg-export`. The SavedModel's
`serving_bytes` signature cannot run Python, so it decodes in TensorFlow by the
same rules (`ipg_keras.export.saved_model.decode_image_checked`; tests assert the
same pixels). The result is always uint8 `[H, W, 3]` RGB, the pixels an image
viewer shows, by these rules:

* **Decoding** is Pillow's, complete: truncated files are errors
  (`PIL.ImageFile.LOAD_TRUNCATED_IMAGES` must stay False, the default). Only the
  first frame of a multi-frame file (animated GIF/WebP/PNG) is read; a TIFF with
  several full-resolution pages warns (`ImageReadWarning`) and reads page 1
  (reduced-resolution overview pages of pyramidal GeoTIFFs are not counted).
* **Orientation**: the EXIF orientation tag (or TIFF's Orientation) is applied
  (`PIL.ImageOps.exif_transpose`), as viewers do with phone and camera photos.
* **Colour**: grayscale, 1-bit, palette and CMYK images are converted to RGB by
  Pillow (`Image.convert`; CMYK without colour management). Embedded ICC profiles
  are not applied, as in TensorFlow's, OpenCV's and Pillow's own decoders.
* **Transparency** (alpha channel, palette or tRNS transparency): composited over
  black, `rgb * alpha / 255` rounded. Transparent means "no image here", which the
  models already see as black: letterboxing pads with 0. (TensorFlow's GIF decoder
  does the same, so `serving_bytes` matches without extra work.)
* **High bit depth**: one rule for every format, **full scale of the sample
  type**. Unsigned N-bit integers keep their top 8 bits (`v >> (N - 8)`, e.g.
  16-bit `v >> 8`); signed integers use 0..2**(N-1)-1 (negatives become 0, with a
  warning); floating point data is read as intensities 0..1 (`round(v * 255)`,
  NaN as 0) and refused when it lies outside 0..1 (a float image of elevations or
  counts has no display scale: convert it with the scaling you want).
  Why this rule: it is what libpng, TensorFlow's decoders, OpenCV,
  scikit-image's `img_as_ubyte` and Pillow itself (for 16-bit RGB/RGBA PNG and
  TIFF) already do, so 16-bit PNG gives the same pixels in `serving_bytes` and in
  any other tool; and it maps a raw value to the same brightness in every image,
  crop and tile, whereas stretching each image by its own min..max would turn an
  empty frame's sensor noise into full-contrast texture and change an object's
  brightness with whatever else is in the frame. Data that uses only a small part
  of its range (12-bit cameras writing 16-bit files) therefore reads dark; the
  reader warns (`ImageReadWarning`) when the result stays below 64 of 255, so that
  you can rescale such files once, before training, for every path alike.

Anything that cannot be read this way raises `ImageReadError` (a `ValueError`)
naming the file and why; a missing file raises `FileNotFoundError`.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

CHECK_LEVELS = ("header", "verify", "decode")
#: A 16-bit (or float) image whose 8-bit result stays below this warns: dark image.
DARK_LIMIT = 64
_UINT16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "La", "RGBa", "PA")


class ImageReadError(ValueError):
    """An image file that cannot be decoded to pixels; the message names the file and why."""


class ImageReadWarning(UserWarning):
    """An image was read, but not as it is stored: first page of several, dark high-bit-depth data, ..."""


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """What `check_image` found: size in pixels as `read_image` returns it (after EXIF
    orientation) and Pillow's format name ("JPEG", "PNG", "TIFF", ...)."""

    width: int
    height: int
    format: str


def _warn(message: str) -> None:
    warnings.warn(message, ImageReadWarning, stacklevel=3)


def _premultiply(rgba: np.ndarray) -> np.ndarray:
    """RGBA uint8 composited over black: `round(rgb * alpha / 255)`, exact integer arithmetic."""
    rgba = rgba.astype(np.int32)
    return ((rgba[..., :3] * rgba[..., 3:4] + 127) // 255).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)


def _tiff_sample_type(im: Image.Image) -> tuple[int | None, bool]:
    """(bits per sample, signed) from TIFF tags, (None, False) for other formats."""
    tags = getattr(im, "tag_v2", None)
    if tags is None:
        return None, False
    bits = tags.get(258)
    bits = bits[0] if isinstance(bits, tuple) else bits
    fmt = tags.get(339, 1)
    fmt = fmt[0] if isinstance(fmt, tuple) else fmt
    return (int(bits) if bits else None), fmt == 2


def _dark_warning(name: str, lo, hi, full: str, result_max: int) -> None:
    if result_max < DARK_LIMIT:
        _warn(
            f"{name}: high-bit-depth image with values {lo}..{hi} of {full}; read by full scale "
            f"(ipg_keras.data.image_io rule) it becomes a dark image (max {result_max} of 255). If the "
            "file holds e.g. 12-bit camera data, rescale such files once before training so that "
            "training and prediction see the same, brighter pixels."
        )


def _integer_to_rgb8(arr: np.ndarray, bits: int, signed: bool, name: str) -> np.ndarray:
    """Full-scale rule for integer samples of `bits` bits (see the module docstring)."""
    arr = arr.astype(np.int64)
    lo, hi = int(arr.min()), int(arr.max())
    if signed:
        if lo < 0:
            _warn(f"{name}: signed {bits}-bit image has values down to {lo}; negative values read as 0 (black).")
        out = np.clip(arr, 0, None) >> (bits - 9)
        full = f"0..{2 ** (bits - 1) - 1}"
    else:
        if lo < 0 or hi >= 2**bits:
            raise ImageReadError(f"cannot read image {name}: values {lo}..{hi} do not fit its {bits}-bit samples")
        out = arr >> (bits - 8)
        full = f"0..{2 ** bits - 1}"
    out = np.clip(out, 0, 255).astype(np.uint8)
    _dark_warning(name, lo, hi, full, int(out.max()))
    return out


def _float_to_rgb8(arr: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(arr, np.float64)
    finite = np.isfinite(arr)
    if not finite.any():
        raise ImageReadError(f"cannot read image {name}: floating point image holds no finite value")
    lo, hi = float(arr[finite].min()), float(arr[finite].max())
    tolerance = 0.5 / 255  # values that still round into 0..255
    if lo < -tolerance or hi > 1 + tolerance:
        raise ImageReadError(
            f"cannot read image {name}: floating point image with values {lo:.6g}..{hi:.6g}; float images "
            "are read as intensities 0..1 (full scale), and these values have no display scale (elevations? "
            "counts?). Convert the file to 8 or 16 bits with the scaling you want (e.g. gdal_translate -scale "
            "-ot Byte, or numpy), so that every path reads the same pixels."
        )
    out = np.round(np.clip(np.where(finite, arr, 0.0), 0.0, 1.0) * 255.0).astype(np.uint8)
    _dark_warning(name, f"{lo:.4g}", f"{hi:.4g}", "0..1", int(out.max()))
    return out


def _has_transparency(im: Image.Image) -> bool:
    return im.mode in _ALPHA_MODES or (im.mode in ("P", "L", "RGB", "1") and "transparency" in im.info)


def _warn_extra_pages(im: Image.Image, name: str) -> None:
    """Warn when a TIFF has full-resolution pages besides the first (overviews do not count)."""
    n = int(getattr(im, "n_frames", 1) or 1)
    if n <= 1 or im.format != "TIFF":
        return
    extra = 0
    for i in range(1, n):
        im.seek(i)
        if not int(im.tag_v2.get(254, 0) or 0) & 1:  # NewSubfileType bit 0: reduced-resolution page
            extra += 1
    im.seek(0)
    if extra:
        _warn(f"{name}: TIFF with {extra + 1} pages (a stack or series?); only the first page is read.")


def pil_to_rgb8(im: Image.Image, name: str = "<image>") -> np.ndarray:
    """uint8 `[H, W, 3]` RGB of an opened Pillow image by the module's rules (`name` for messages).

    Decodes the current frame fully (raises `OSError` for truncated data), applies the
    EXIF orientation, transparency and high-bit-depth rules of the module docstring.
    Raises `ImageReadError` for sample types without a rule (floats outside 0..1, ...).
    """
    im.load()
    if im.getexif().get(0x0112, 1) in (2, 3, 4, 5, 6, 7, 8):  # EXIF (or XMP, TIFF) orientation
        im = ImageOps.exif_transpose(im)
    mode = im.mode
    if mode in _UINT16_MODES:
        return _gray_to_rgb(_integer_to_rgb8(np.asarray(im), 16, False, name))
    if mode == "I":  # 32-bit int in Pillow: TIFF int16/int32/uint16 data, some 16-bit formats
        bits, signed = _tiff_sample_type(im)
        if bits is None or bits <= 8:
            bits, signed = 16, False
        return _gray_to_rgb(_integer_to_rgb8(np.asarray(im), bits, signed, name))
    if mode == "F":
        return _gray_to_rgb(_float_to_rgb8(np.asarray(im), name))
    if _has_transparency(im):
        return _premultiply(np.asarray(im.convert("RGBA")))
    try:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except ValueError as error:  # a mode Pillow cannot convert (e.g. LAB, multi-band)
        raise ImageReadError(
            f"cannot read image {name}: {im.mode} images cannot be converted to RGB ({error})"
        ) from None


def _open_error(path: str, error: BaseException) -> ImageReadError:
    if isinstance(error, Image.DecompressionBombError):
        return ImageReadError(
            f"cannot read image {path}: {error} Pillow refuses images this large as a decompression-bomb guard; "
            "if you trust the file, raise PIL.Image.MAX_IMAGE_PIXELS (or tile it into smaller files)."
        )
    if isinstance(error, UnidentifiedImageError):
        try:
            size = os.path.getsize(path)
        except OSError:
            size = -1
        if size == 0:
            return ImageReadError(f"cannot read image {path}: the file is empty (0 bytes)")
        with open(path, "rb") as fh:
            head = fh.read(12)
        hint = ""
        if head[4:8] == b"ftyp":  # ISO media container: HEIC/HEIF (phones), AVIF without Pillow support
            hint = "; a HEIF/HEIC or AVIF photo: convert it to JPEG or PNG, or install a Pillow plugin for it"
        return ImageReadError(
            f"cannot read image {path}: not an image format Pillow can decode (the file starts with {head!r}){hint}"
        )
    reason = str(error) or type(error).__name__
    if "truncated" in reason.lower():
        reason += " (an interrupted copy or download? get the file again)"
    return ImageReadError(f"cannot read image {path}: {reason}")


def _read(path) -> tuple[np.ndarray, str]:
    if hasattr(path, "read"):  # an open binary file (e.g. io.BytesIO of uploaded bytes)
        name = str(getattr(path, "name", "<image bytes>"))
        try:
            with Image.open(path) as im:
                return pil_to_rgb8(im, name), im.format or ""
        except ImageReadError:
            raise
        except Exception as error:  # noqa: BLE001 - Pillow's plugins raise many types for corrupt data
            raise ImageReadError(f"cannot read image {name}: {error}") from None
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"image file {path} does not exist")
    if os.path.isdir(path):
        raise ImageReadError(f"cannot read image {path}: it is a folder, not an image file")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise ImageReadError(
            f"cannot read image {path}: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True, which fills truncated "
            "images with grey silently; set it back to False"
        )
    try:
        with Image.open(path) as im:
            fmt = im.format or ""
            _warn_extra_pages(im, path)
            return pil_to_rgb8(im, path), fmt
    except ImageReadError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError, EOFError,
            IndexError, KeyError, TypeError, MemoryError) as error:
        # Pillow's plugins raise all of these for corrupt data.
        raise _open_error(path, error) from None


def read_image(path: str | os.PathLike | BinaryIO) -> np.ndarray:
    """The pixels of an image file, as an image viewer shows them.

    Args:
        path: image file in any format Pillow reads (JPEG, PNG, TIFF, BMP, GIF,
            WebP, ...), any mode (1-bit, gray, gray+alpha, palette, RGB, RGBA, CMYK,
            16-bit, 32-bit integer, float32); or an open binary file
            (`io.BytesIO(encoded)`).

    Returns:
        uint8 array `[H, W, 3]`, RGB, by the rules of this module's docstring
        (EXIF orientation applied, transparency over black, high bit depth by full
        scale of the sample type). H, W are the size after orientation.

    Raises:
        FileNotFoundError: `path` does not exist.
        ImageReadError (a ValueError): the file cannot be decoded completely
            (corrupt, truncated, empty, not an image, too large for Pillow's guard)
            or holds samples without a display rule; the message names the file.

    Warns:
        ImageReadWarning: multi-page TIFF (first page read), dark high-bit-depth data,
            negative values in signed data.
    """
    return _read(path)[0]


def _orientation(im: Image.Image) -> int:
    """EXIF orientation still to apply to `im.size`, without decoding pixels (PNG's eXIf only
    when it precedes IDAT). Pillow applies a TIFF's orientation itself, size included."""
    if im.format == "TIFF" or (im.format == "PNG" and "exif" not in im.info):
        return 1
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block: the reader ignores it too
        return 1


def _jpeg_is_complete(path: str) -> bool:
    """A JPEG ends with its EOI marker (FF D9) unless cut off; trailing bytes after EOI do occur."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() < 4:
            return False
        fh.seek(-2, os.SEEK_END)
        return fh.read(2) == b"\xff\xd9"


def check_image(path: str | os.PathLike, level: str = "verify") -> ImageInfo:
    """Check an image file at load time, before training reads it; returns its `ImageInfo`.

    Levels (cheapest first):
        "header": Pillow reads the header only (format and size).
        "verify" (default): also proves the data complete, the cheapest way per
            format: a JPEG must end with its EOI marker (else it is decoded fully,
            which tells a cut-off file from trailing bytes after EOI); PNG chunks
            and checksums are verified up to IEND (`Image.verify`); every other
            format (TIFF, BMP, GIF, WebP, ...) is decoded by `read_image`. Catches
            truncated files (interrupted copies), which Pillow's `verify` alone
            does not for JPEG.
        "decode": decodes every file with `read_image`: catches everything the
            reader would refuse, at the cost of a full decode.

    Raises `FileNotFoundError`, `ImageReadError` (naming the file and why) or
    `ValueError` for an unknown level.
    """
    if level not in CHECK_LEVELS:
        raise ValueError(f"validate={level!r}; use one of {CHECK_LEVELS}")
    path = os.fspath(path)
    if level == "decode" or not os.path.isfile(path):
        pixels, fmt = _read(path)
        return ImageInfo(int(pixels.shape[1]), int(pixels.shape[0]), fmt)
    try:
        with Image.open(path) as im:
            fmt = im.format or ""
            width, height = im.size
            if _orientation(im) in (5, 6, 7, 8):  # rotated by 90 degrees: read_image swaps the sides
                width, height = height, width
            if level == "verify" and fmt == "PNG":
                im.verify()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError, EOFError,
            IndexError, KeyError, TypeError) as error:
        raise _open_error(path, error) from None
    complete = fmt == "PNG" or (fmt == "JPEG" and _jpeg_is_complete(path))
    if level == "verify" and not complete:
        pixels, fmt = _read(path)
        return ImageInfo(int(pixels.shape[1]), int(pixels.shape[0]), fmt)
    return ImageInfo(int(width), int(height), fmt)
