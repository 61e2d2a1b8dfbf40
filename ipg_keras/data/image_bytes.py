"""The image reader's rules in TensorFlow ops: `decode_image_bytes` for graphs that cannot call Python.

A SavedModel's `serving_bytes` signature decodes encoded images inside the
graph, where Pillow (and so `ipg_keras.data.image_io.read_image`) cannot run.
`decode_image_bytes` gives the same pixels as `read_image` (tests assert it,
format by format) for what TensorFlow decodes:

* JPEG (baseline, progressive, gray, CMYK) with `dct_method="INTEGER_ACCURATE"`
  (Pillow's libjpeg default; TensorFlow's own default differs by up to 6 levels),
  and the EXIF orientation tag applied (parsed from the APP1 segment in the first
  256 KiB of the file);
* PNG of any bit depth and mode: 16-bit samples keep their high byte (the
  reader's full-scale rule, which is libpng's), transparency over black;
* BMP with 24 or 32 bits per pixel, or 8 bits with a palette (uncompressed);
* GIF (first frame; transparent pixels black, as in the reader);
* WebP (still images; alpha over black).

Not covered, refused with a message (decode such files with `read_image` and send
pixels to `serving_default`, or convert them): TIFF (TensorFlow has no TIFF
decoder), BMP with 1/4/16 bits or RLE/bitfield compression, animated WebP
(TensorFlow 2.21's WebP decoder corrupts memory on some animations), and other
formats. Orientation from XMP or from a PNG/WebP EXIF chunk is not applied
(`read_image` applies it), and an animated GIF is decoded whole before its first
frame is taken (its memory is bounded by `max_pixels` per frame only).
"""

from __future__ import annotations

import tensorflow as tf

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
# Formats in the order of the branch index used below.
FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP")
_EXIF_SCAN = 262144  # bytes of a JPEG searched for its EXIF block
_MAX_SEGMENTS = 12  # JPEG marker segments walked before giving up on EXIF
_MAX_IFD_ENTRIES = 128


def _substr(data, start, length: int):
    """`data[start:start + length]`, empty past the end (tf.strings.substr fails there)."""
    return tf.strings.substr(data, tf.minimum(start, tf.strings.length(data)), length)


def _bytes_at(data, start: int, length: int):
    """int64 `[length]` bytes of `data` from `start`, zero-padded past its end."""
    chunk = _substr(data, start, length)
    return tf.cast(tf.io.decode_raw(chunk, tf.uint8, fixed_length=length), tf.int64)


def _format_index(data):
    """0..4 for `FORMATS`, 5 for TIFF, 6 for anything else."""
    head = tf.strings.join([_substr(data, 0, 12), tf.constant(b"\0" * 12)])
    is_jpeg = tf.equal(tf.strings.substr(head, 0, 3), _JPEG_SIGNATURE)
    is_png = tf.equal(tf.strings.substr(head, 0, 8), _PNG_SIGNATURE)
    is_bmp = tf.equal(tf.strings.substr(head, 0, 2), b"BM")
    is_gif = tf.logical_or(tf.equal(tf.strings.substr(head, 0, 6), b"GIF87a"),
                           tf.equal(tf.strings.substr(head, 0, 6), b"GIF89a"))
    is_webp = tf.logical_and(tf.equal(tf.strings.substr(head, 0, 4), b"RIFF"),
                             tf.equal(tf.strings.substr(head, 8, 4), b"WEBP"))
    is_tiff = tf.logical_or(tf.equal(tf.strings.substr(head, 0, 4), b"II*\0"),
                            tf.equal(tf.strings.substr(head, 0, 4), b"MM\0*"))
    index = tf.constant(6)
    for i, flag in reversed(list(enumerate([is_jpeg, is_png, is_bmp, is_gif, is_webp, is_tiff]))):
        index = tf.where(flag, i, index)
    return index


def _le(b, start: int, size: int):
    return sum(b[start + k] * (256**k) for k in range(size))


def _png_size(data):
    """(height, width) from the IHDR chunk, checked to be present."""
    checks = [tf.debugging.assert_greater_equal(
        tf.strings.length(data), 33, message="serving_bytes: PNG data is truncated (no complete IHDR chunk)")]
    with tf.control_dependencies(checks):
        b = _bytes_at(data, 0, 24)
    ihdr = tf.debugging.Assert(tf.equal(_substr(data, 12, 4), b"IHDR"),
                               ["serving_bytes: PNG has no IHDR chunk"])
    with tf.control_dependencies([ihdr]):
        width = b[16] * 16777216 + b[17] * 65536 + b[18] * 256 + b[19]
        height = b[20] * 16777216 + b[21] * 65536 + b[22] * 256 + b[23]
    return height, width


def _jpeg_size(data):
    shape = tf.cast(tf.image.extract_jpeg_shape(data), tf.int64)  # reads the header only
    return shape[0], shape[1]


def _bmp_header(data):
    b = _bytes_at(data, 0, 54)
    dib = _le(b, 14, 4)
    width = _le(b, 18, 4)
    height = _le(b, 22, 4)
    height = tf.where(height >= 2**31, 2**32 - height, height)  # negative height: rows stored top-down
    width = tf.where(width >= 2**31, tf.constant(0, tf.int64), width)
    return dib, height, width, _le(b, 28, 2), _le(b, 30, 4), _le(b, 46, 4)


def _bmp_size(data):
    dib, height, width, bits, compression, _ = _bmp_header(data)
    ok = tf.debugging.Assert(
        tf.logical_and(dib >= 40, tf.logical_and(tf.equal(compression, 0),
                                                 tf.reduce_any(tf.equal(bits, [8, 24, 32])))),
        ["serving_bytes: BMP with", bits, "bits per pixel and compression", compression,
         "is not decoded here (only uncompressed 8-bit palette, 24- and 32-bit BMP); convert it to PNG"],
    )
    with tf.control_dependencies([ok]):
        return tf.identity(height), tf.identity(width)


def _gif_size(data):
    b = _bytes_at(data, 0, 10)
    return _le(b, 8, 2), _le(b, 6, 2)


def _webp_size(data):
    b = _bytes_at(data, 0, 30)
    chunk = _substr(data, 12, 4)
    # TensorFlow's WebP decoder corrupts memory on some animations: refuse them before decoding.
    animated = tf.logical_and(tf.equal(chunk, b"VP8X"), tf.equal(b[20] // 2 % 2, 1))
    still = tf.debugging.Assert(tf.logical_not(animated), [
        "serving_bytes: animated WebP is not decoded here; send its first frame (PNG or WebP)"])
    lossy_w, lossy_h = _le(b, 26, 2) % 16384, _le(b, 28, 2) % 16384
    lossless_w = 1 + b[21] + (b[22] % 64) * 256
    lossless_h = 1 + b[22] // 64 + b[23] * 4 + (b[24] % 16) * 1024
    extended_w, extended_h = 1 + _le(b, 24, 3), 1 + _le(b, 27, 3)
    is_lossless = tf.equal(chunk, b"VP8L")
    is_extended = tf.equal(chunk, b"VP8X")
    with tf.control_dependencies([still]):
        height = tf.where(is_extended, extended_h, tf.where(is_lossless, lossless_h, lossy_h))
        width = tf.where(is_extended, extended_w, tf.where(is_lossless, lossless_w, lossy_w))
    return height, width


def jpeg_orientation(data):
    """EXIF orientation (1..8; 1 when absent or unreadable) of a JPEG, from its APP1 segment."""
    head = _bytes_at(data, 0, _EXIF_SCAN)

    def at(index):
        return tf.gather(head, tf.clip_by_value(index, 0, _EXIF_SCAN - 1))

    signature = tf.constant(list(b"Exif\0\0"), tf.int64)
    pos = tf.constant(2, tf.int64)
    exif = tf.constant(-1, tf.int64)
    for _ in range(_MAX_SEGMENTS):  # walk marker segments (APPn, COM, DQT, ...) up to APP1 "Exif"
        b = at(pos + tf.range(10, dtype=tf.int64))
        searching = tf.logical_and(tf.equal(b[0], 0xFF), exif < 0)
        found = tf.logical_and(searching, tf.logical_and(tf.equal(b[1], 0xE1),
                                                         tf.reduce_all(tf.equal(b[4:10], signature))))
        exif = tf.where(found, pos, exif)
        # Stop at the frame / scan (SOFn, SOS): EXIF comes before them.
        header = tf.logical_or(tf.logical_and(b[1] >= 0xE0, b[1] <= 0xFE),  # APPn, COM
                               tf.reduce_any(tf.equal(b[1], [0xDB, 0xC4, 0xDD])))  # DQT, DHT, DRI
        pos = tf.where(tf.logical_and(searching, tf.logical_and(~found, header)), pos + 2 + b[2] * 256 + b[3], pos)
    tiff = exif + 10
    little = tf.equal(at(tiff), 0x49)  # "II": little-endian; "MM": big-endian

    def u16(i):
        lo, hi = at(i), at(i + 1)
        return tf.where(little, lo + 256 * hi, 256 * lo + hi)

    def u32(i):
        return tf.where(little, u16(i) + 65536 * u16(i + 2), 65536 * u16(i) + u16(i + 2))

    ifd = tiff + u32(tiff + 4)
    count = u16(ifd)
    entries = ifd + 2 + 12 * tf.range(_MAX_IFD_ENTRIES, dtype=tf.int64)
    hit = (tf.range(_MAX_IFD_ENTRIES, dtype=tf.int64) < count) & tf.equal(u16(entries), 0x0112) & tf.equal(
        u16(entries + 2), 3) & (entries + 12 <= _EXIF_SCAN)
    value = tf.gather(u16(entries + 8), tf.argmax(tf.cast(hit, tf.int32)))
    valid = (exif >= 0) & tf.reduce_any(hit) & (value >= 1) & (value <= 8)
    return tf.where(valid, value, 1)


def apply_orientation(image, orientation):
    """`image` `[H, W, C]` turned as `PIL.ImageOps.exif_transpose` turns an image with this EXIF orientation."""
    transpose = lambda x: tf.transpose(x, [1, 0, 2])  # noqa: E731 - PIL's TRANSPOSE: swap x and y
    branches = [
        lambda: image,
        lambda: tf.reverse(image, [1]),  # FLIP_LEFT_RIGHT
        lambda: tf.image.rot90(image, 2),  # ROTATE_180
        lambda: tf.reverse(image, [0]),  # FLIP_TOP_BOTTOM
        lambda: transpose(image),  # TRANSPOSE
        lambda: tf.image.rot90(image, 3),  # ROTATE_270 (90 degrees clockwise)
        lambda: tf.image.rot90(transpose(image), 2),  # TRANSVERSE
        lambda: tf.image.rot90(image, 1),  # ROTATE_90 (counter-clockwise)
    ]
    return tf.switch_case(tf.cast(orientation, tf.int32) - 1, branches)


def _over_black(rgba):
    """uint8 RGBA -> RGB composited over black, `round(rgb * alpha / 255)` (the reader's integer arithmetic)."""
    rgba = tf.cast(rgba, tf.int32)
    return tf.cast((rgba[..., :3] * rgba[..., 3:4] + 127) // 255, tf.uint8)


def _decode_jpeg(data):
    image = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
    return apply_orientation(image, jpeg_orientation(data))


def _to_rgb(image):
    """uint8 `[H, W, C]` with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA) -> RGB, alpha over black."""
    channels = tf.shape(image)[-1]
    return tf.switch_case(channels - 1, [
        lambda: tf.image.grayscale_to_rgb(image[..., :1]),
        lambda: _over_black(tf.concat([tf.image.grayscale_to_rgb(image[..., :1]), image[..., 1:2]], -1)),
        lambda: image[..., :3],
        lambda: _over_black(image[..., :4]),
    ])


def _png_has_trns(data):
    """Whether a tRNS chunk (palette or colour-key transparency) comes before the first IDAT."""
    n = tf.cast(tf.strings.length(data), tf.int64)

    def body(pos, found, done):
        header = _bytes_at(data, tf.cast(pos, tf.int32), 8)
        kind = _substr(data, tf.cast(tf.minimum(pos + 4, n), tf.int32), 4)
        length = header[0] * 16777216 + header[1] * 65536 + header[2] * 256 + header[3]
        return pos + 12 + length, tf.equal(kind, b"tRNS"), tf.logical_or(tf.equal(kind, b"IDAT"), pos + 8 > n)

    _, found, _ = tf.while_loop(
        lambda pos, found, done: tf.logical_not(tf.logical_or(found, done)), body,
        (tf.constant(8, tf.int64), tf.constant(False), tf.constant(False)), maximum_iterations=4096)
    return found


def _decode_png(data):
    # tRNS needs 4 channels to become alpha; without it, native channels (4 would
    # give low-bit-depth grayscale a wrong alpha).
    return tf.cond(_png_has_trns(data), lambda: _over_black(tf.io.decode_png(data, channels=4, dtype=tf.uint8)),
                   lambda: _to_rgb(tf.io.decode_png(data, channels=0, dtype=tf.uint8)))


def _decode_bmp(data):
    dib, _, _, bits, _, colors = _bmp_header(data)

    def palette():
        n = tf.where(tf.equal(colors, 0), tf.constant(256, tf.int64), tf.minimum(colors, 256))
        table = tf.reshape(_bytes_at(data, tf.cast(14 + dib, tf.int32), 1024), [256, 4])
        table = tf.where(tf.range(256, dtype=tf.int64)[:, None] < n, table, 0)
        index = tf.io.decode_bmp(data, channels=0)[..., 0]
        return tf.cast(tf.gather(tf.reverse(table[:, :3], [1]), tf.cast(index, tf.int32)), tf.uint8)

    return tf.cond(tf.equal(bits, 8), palette, lambda: tf.io.decode_bmp(data, channels=3))


def _decode_gif(data):
    return tf.io.decode_gif(data)[0]


def _decode_webp(data):
    return _to_rgb(tf.image.decode_webp(data, channels=0)[0])


def decode_image_bytes(data, max_pixels: int):
    """One encoded image (scalar string tensor) -> uint8 `[H, W, 3]` RGB, as `read_image` reads the file.

    The header is validated before any pixel buffer is allocated: another format, a
    corrupt or truncated header, zero-sized images or more than `max_pixels` pixels
    raise `InvalidArgumentError` at run time with a message saying which.
    """
    index = _format_index(data)
    known = tf.debugging.Assert(
        tf.less(index, 5),
        ["serving_bytes: input is not a JPEG, PNG, BMP, GIF or WebP file (magic bytes:",
         _substr(data, 0, 4), "); TIFF and other formats cannot be decoded in TensorFlow: decode "
         "them with ipg_keras.data.image_io.read_image and send pixels to serving_default, or convert them"],
        summarize=4,
    )
    with tf.control_dependencies([known]):
        height, width = tf.switch_case(
            tf.minimum(index, 4), [lambda: _jpeg_size(data), lambda: _png_size(data), lambda: _bmp_size(data),
                                   lambda: _gif_size(data), lambda: _webp_size(data)])
    checks = [
        tf.debugging.Assert(
            tf.logical_and(height > 0, width > 0), ["serving_bytes: image has zero height or width"]
        ),
        tf.debugging.Assert(
            height * width <= max_pixels,
            ["serving_bytes: image of", height, "x", width, "pixels is above the limit of", max_pixels,
             "pixels; downscale it before sending (limit set by export_saved_model(max_pixels=...))"],
        ),
    ]
    with tf.control_dependencies(checks):
        image = tf.switch_case(
            tf.minimum(index, 4), [lambda: _decode_jpeg(data), lambda: _decode_png(data),
                                   lambda: _decode_bmp(data), lambda: _decode_gif(data),
                                   lambda: _decode_webp(data)])
    return tf.ensure_shape(image, [None, None, 3])
