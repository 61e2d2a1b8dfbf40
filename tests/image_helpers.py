"""Image files of every format and mode a user may have, written at test time with their
expected pixels (computed by the documented rules of ipg_keras.data.image_io, not by it).

`image_zoo(folder)` -> {name: (path, expected uint8 [H, W, 3], tolerance)}. JPEG and lossy
cases have a tolerance; the rest must match exactly.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image

H, W = 12, 16


def write_tiff(path: Path, array: np.ndarray, sample_format: int = 1, pages: int = 1) -> Path:
    """Minimal little-endian uncompressed TIFF (Pillow cannot write 16-bit RGB TIFF).

    array: [H, W] or [H, W, C] of uint8/uint16/int16/float32; sample_format 1 = unsigned,
    2 = signed, 3 = float; `pages` copies of the image as full-resolution pages.
    """
    array = np.ascontiguousarray(array)
    h, w = array.shape[:2]
    c = 1 if array.ndim == 2 else array.shape[2]
    bits = array.dtype.itemsize * 8
    data = array.astype(array.dtype.newbyteorder("<")).tobytes()
    out = bytearray(b"II*\x00" + struct.pack("<I", 0))

    def short_array(values):
        offset = len(out)
        out.extend(struct.pack("<" + "H" * len(values), *values))
        return offset

    first_ifd = None
    previous_next = None
    for _ in range(pages):
        data_offset = len(out)
        out.extend(data)
        bits_value = short_array([bits] * c) if c > 2 else bits
        format_value = short_array([sample_format] * c) if c > 2 else sample_format
        entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, c, bits_value), (259, 3, 1, 1),
                   (262, 3, 1, 2 if c >= 3 else 1), (273, 4, 1, data_offset), (277, 3, 1, c), (278, 4, 1, h),
                   (279, 4, 1, len(data))]
        if c == 4:
            entries.append((338, 3, 1, 2))  # unassociated alpha
        entries.append((339, 3, c, format_value))
        if len(out) % 2:
            out.append(0)
        ifd_offset = len(out)
        out.extend(struct.pack("<H", len(entries)))
        for tag, kind, count, value in entries:
            packed = struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value)
            out.extend(struct.pack("<HHI", tag, kind, count) + packed)
        next_pos = len(out)
        out.extend(struct.pack("<I", 0))
        if first_ifd is None:
            first_ifd = ifd_offset
        else:
            out[previous_next:previous_next + 4] = struct.pack("<I", ifd_offset)
        previous_next = next_pos
    out[4:8] = struct.pack("<I", first_ifd)
    path.write_bytes(bytes(out))
    return path


def _rgb(h=H, w=W, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def over_black(rgb, alpha) -> np.ndarray:
    """The documented transparency rule: round(rgb * alpha / 255)."""
    return np.round(np.asarray(rgb, np.float64) * np.asarray(alpha, np.float64)[..., None] / 255).astype(np.uint8)


def gray3(gray) -> np.ndarray:
    return np.repeat(np.asarray(gray, np.uint8)[..., None], 3, axis=-1)


def image_zoo(folder: Path) -> dict[str, tuple[Path, np.ndarray, int]]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    zoo: dict[str, tuple[Path, np.ndarray, int]] = {}

    def add(name, expected, tolerance=0):
        zoo[name] = (folder / name, np.asarray(expected, np.uint8), tolerance)

    rgb = _rgb()
    Image.fromarray(rgb).save(folder / "rgb.png")
    add("rgb.png", rgb)
    gray = rgb[..., 0]
    Image.fromarray(gray).save(folder / "gray.png")
    add("gray.png", gray3(gray))
    alpha = _rgb(seed=1)[..., 0]
    Image.fromarray(np.dstack([gray, alpha]), "LA").save(folder / "gray_alpha.png")
    add("gray_alpha.png", gray3(over_black(gray3(gray), alpha)[..., 0]))
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(folder / "rgba.png")
    add("rgba.png", over_black(rgb, alpha))

    # Palette with a transparent index (tRNS): that colour reads black.
    palette = np.asarray([[255, 0, 0], [0, 255, 0], [0, 0, 255], [250, 250, 250]], np.uint8)
    index = np.random.default_rng(2).integers(0, 4, (H, W)).astype(np.uint8)
    p = Image.fromarray(index, "P")
    p.putpalette(palette.ravel().tolist())
    p.save(folder / "palette.png", transparency=3)
    expected = palette[index].copy()
    expected[index == 3] = 0
    add("palette.png", expected)
    p.save(folder / "palette.bmp")
    add("palette.bmp", palette[index])
    p.save(folder / "palette.gif", transparency=3)
    add("palette.gif", expected)
    # Animated GIF: the first frame.
    frames = [p.copy(), Image.fromarray((3 - index).astype(np.uint8), "P")]
    frames[1].putpalette(palette.ravel().tolist())
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    add("animated.gif", palette[index])
    Image.fromarray(rgb).save(folder / "rgb.bmp")
    add("rgb.bmp", rgb)
    Image.fromarray(rgb).save(folder / "lossless.webp", lossless=True)
    add("lossless.webp", rgb)
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(folder / "rgba.webp", lossless=True)
    add("rgba.webp", over_black(rgb, alpha))

    # 16-bit: full scale, v >> 8, identical for PNG and TIFF, gray and RGB.
    g16 = np.random.default_rng(3).integers(0, 65536, (H, W)).astype(np.uint16)
    Image.fromarray(g16).save(folder / "gray16.png")
    add("gray16.png", gray3(g16 >> 8))
    Image.fromarray(g16).save(folder / "gray16.tif")
    add("gray16.tif", gray3(g16 >> 8))
    rgb16 = np.random.default_rng(4).integers(0, 65536, (H, W, 3)).astype(np.uint16)
    write_tiff(folder / "rgb16.tif", rgb16)
    add("rgb16.tif", (rgb16 >> 8).astype(np.uint8))
    f32 = np.random.default_rng(5).uniform(0, 1, (H, W)).astype(np.float32)
    Image.fromarray(f32, "F").save(folder / "float.tif")
    add("float.tif", gray3(np.round(f32.astype(np.float64) * 255)))
    Image.fromarray(rgb).save(folder / "rgb.tif")
    add("rgb.tif", rgb)

    # JPEG (lossy: a tolerance). Flat colours keep the error small.
    flat = np.zeros((H, W, 3), np.uint8)
    flat[:, : W // 2] = (200, 40, 40)
    flat[:, W // 2 :] = (30, 160, 90)
    Image.fromarray(flat).save(folder / "photo.jpg", quality=95, subsampling=0)
    add("photo.jpg", flat, 8)
    cmyk = Image.new("CMYK", (W, H), (0, 255, 255, 0))  # pure red in CMYK
    cmyk.save(folder / "cmyk.jpg", quality=95)
    add("cmyk.jpg", np.broadcast_to(np.asarray([255, 0, 0], np.uint8), (H, W, 3)), 8)
    # EXIF orientation 6 (camera held upright): stored 12 x 16 landscape, shown 16 x 12 portrait,
    # the stored left half (red) on top.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(flat).save(folder / "rotated.jpg", quality=95, subsampling=0, exif=exif)
    shown = np.zeros((W, H, 3), np.uint8)
    shown[: W // 2] = (200, 40, 40)
    shown[W // 2 :] = (30, 160, 90)
    add("rotated.jpg", shown, 8)
    return zoo


def jpeg_bytes(array: np.ndarray, **kwargs) -> bytes:
    import io

    data = io.BytesIO()
    Image.fromarray(array).save(data, "JPEG", **kwargs)
    return data.getvalue()
