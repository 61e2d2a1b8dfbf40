"""The one image reader: every format and mode to a viewer's pixels, the same on every path
(reader, tf.data loaders, serving_bytes decoder), refusals naming the file, the load-time check."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
import tensorflow as tf
from image_helpers import H, W, image_zoo, jpeg_bytes, write_tiff
from PIL import Image, ImageFile

from ipg_keras.data import from_coco_json, from_pascal_voc
from ipg_keras.data.image_bytes import decode_image_bytes
from ipg_keras.data.image_io import (
    ImageReadError,
    ImageReadWarning,
    check_image,
    read_image,
)

TF_DECODABLE = (".png", ".jpg", ".bmp", ".gif", ".webp")
# serving_bytes' decoder as one traced graph (tracing it takes seconds).
decode = tf.function(lambda data: decode_image_bytes(data, 10**6), input_signature=[tf.TensorSpec([], tf.string)])


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return image_zoo(tmp_path_factory.mktemp("zoo"))


ZOO_NAMES = sorted([
    "rgb.png", "gray.png", "gray_alpha.png", "rgba.png", "palette.png", "palette.bmp", "palette.gif",
    "animated.gif", "rgb.bmp", "lossless.webp", "rgba.webp", "gray16.png", "gray16.tif", "rgb16.tif",
    "float.tif", "rgb.tif", "photo.jpg", "cmyk.jpg", "rotated.jpg",
])


def test_the_zoo_is_complete(zoo):
    assert sorted(zoo) == ZOO_NAMES


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_read_image_gives_the_documented_pixels(zoo, name):
    path, expected, tolerance = zoo[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageReadWarning)
        pixels = read_image(path)
    assert pixels.dtype == np.uint8 and pixels.shape == expected.shape
    assert np.abs(pixels.astype(int) - expected.astype(int)).max() <= tolerance
    info = check_image(path)  # the load-time check reports the size read_image returns
    assert (info.height, info.width) == pixels.shape[:2]


def test_loader_path_gives_the_readers_pixels(zoo, tmp_path):
    """from_coco_json decodes in tf.data with the same reader: identical arrays for every file."""
    names = ZOO_NAMES
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    for i, name in enumerate(names):
        h, w = zoo[name][1].shape[:2]
        coco["images"].append({"id": i + 1, "file_name": name, "width": w, "height": h})
        coco["annotations"].append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [1, 1, 4, 4],
                                    "area": 16, "iscrowd": 0})
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    folder = zoo[names[0]][0].parent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageReadWarning)
        ds = from_coco_json(tmp_path / "ann.json", folder)
        assert ds.report.counts == {}  # no size mismatch: the rotated JPEG's size is the shown one
        for element in ds:
            name = names[int(element["image_id"]) - 1]
            np.testing.assert_array_equal(element["images"].numpy(), read_image(folder / name).astype(np.float32),
                                          err_msg=name)


@pytest.mark.parametrize("name", [n for n in ZOO_NAMES if n.endswith(TF_DECODABLE)])
def test_serving_decoder_gives_the_readers_pixels(zoo, name):
    """serving_bytes' in-graph decoder (TensorFlow ops) equals the reader for what TF decodes."""
    path = zoo[name][0]
    np.testing.assert_array_equal(decode(tf.constant(path.read_bytes())).numpy(), read_image(path))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied_alike_by_reader_and_serving_decoder(orientation, tmp_path):
    # A marker in the stored top-left corner; PIL's exif_transpose is the reference.
    stored = np.zeros((16, 24, 3), np.uint8)
    stored[:8, :8] = (250, 250, 250)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(stored).save(path, quality=95, subsampling=0, exif=exif)
    pixels = read_image(path)
    assert pixels.shape == ((24, 16, 3) if orientation >= 5 else (16, 24, 3))
    corner = {1: (0, 0), 2: (0, -1), 3: (-1, -1), 4: (-1, 0), 5: (0, 0), 6: (0, -1), 7: (-1, -1), 8: (-1, 0)}
    assert pixels[corner[orientation]].min() > 200  # the marker is where a viewer shows it
    np.testing.assert_array_equal(decode(tf.constant(path.read_bytes())).numpy(), pixels)


def test_16bit_rule_is_full_scale_and_warns_when_dark(tmp_path):
    dark = np.full((8, 8), 1000, np.uint16)
    dark[2:6, 2:6] = 4000
    Image.fromarray(dark).save(tmp_path / "dark.png")
    with pytest.warns(ImageReadWarning, match=r"dark.png: high-bit-depth image with values 1000..4000"):
        pixels = read_image(tmp_path / "dark.png")
    assert set(np.unique(pixels)) == {1000 >> 8, 4000 >> 8}  # 3 and 15: dark, never white, object brighter
    bright = np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8)
    Image.fromarray(bright).save(tmp_path / "bright.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImageReadWarning)  # full-range data reads without a warning
        np.testing.assert_array_equal(read_image(tmp_path / "bright.png")[..., 0], bright >> 8)


def test_signed_and_float_samples(tmp_path):
    signed = np.arange(-8, 56, dtype=np.int16).reshape(8, 8) * 500
    write_tiff(tmp_path / "signed.tif", signed, sample_format=2)
    with pytest.warns(ImageReadWarning, match="negative values read as 0"):
        pixels = read_image(tmp_path / "signed.tif")
    np.testing.assert_array_equal(pixels[..., 0], np.clip(signed.astype(int), 0, None) >> 7)

    elevations = np.linspace(120.5, 890.0, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(elevations, "F").save(tmp_path / "dem.tif")
    with pytest.raises(ImageReadError, match=r"dem.tif: floating point image with values 120.5..890"):
        read_image(tmp_path / "dem.tif")
    with_nan = np.full((8, 8), 0.5, np.float32)
    with_nan[0, 0] = np.nan  # nodata
    Image.fromarray(with_nan, "F").save(tmp_path / "nodata.tif")
    pixels = read_image(tmp_path / "nodata.tif")
    assert pixels[0, 0, 0] == 0 and pixels[1, 1, 0] == 128


def test_multipage_tiff_reads_the_first_page_with_a_warning(tmp_path):
    write_tiff(tmp_path / "stack.tif", np.full((8, 8), 7, np.uint8), pages=3)
    with pytest.warns(ImageReadWarning, match="stack.tif: TIFF with 3 pages"):
        pixels = read_image(tmp_path / "stack.tif")
    assert pixels.shape == (8, 8, 3) and np.all(pixels == 7)


@pytest.mark.parametrize(
    "content, message",
    [(b"", "the file is empty"), (b"hello, I am a text file\n", "not an image format Pillow can decode"),
     ("truncated", "(?i)truncated"), ("truncated_png", "(?i)truncated")],
)
def test_unreadable_files_raise_naming_the_file(tmp_path, content, message):
    path = tmp_path / ("bad.png" if content == "truncated_png" else "bad.jpg")
    if content == "truncated":
        data = jpeg_bytes(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
        content = data[: len(data) // 2]
    elif content == "truncated_png":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
        content = path.read_bytes()[:-300]
    path.write_bytes(content)
    for call in (read_image, check_image, lambda p: check_image(p, "decode")):
        with pytest.raises(ImageReadError, match=message) as info:
            call(path)
        assert str(path) in str(info.value)
        assert isinstance(info.value, ValueError)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        read_image(tmp_path / "missing.jpg")


def test_check_levels_on_a_truncated_jpeg(tmp_path):
    data = jpeg_bytes(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    (tmp_path / "cut.jpg").write_bytes(data[: int(len(data) * 0.9)])
    assert check_image(tmp_path / "cut.jpg", "header").width == 64  # the header alone looks fine
    with pytest.raises(ImageReadError, match="truncated"):
        check_image(tmp_path / "cut.jpg")  # the default level catches it
    # Trailing bytes after EOI (some cameras append data) are not truncation.
    (tmp_path / "trailer.jpg").write_bytes(data + b"\x00CAMERA-TRAILER" * 4)
    assert check_image(tmp_path / "trailer.jpg").width == 64
    with pytest.raises(ValueError, match="validate='fast'"):
        check_image(tmp_path / "trailer.jpg", "fast")


def test_load_truncated_images_must_stay_false(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "ok.png")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageReadError, match="LOAD_TRUNCATED_IMAGES"):
        read_image(tmp_path / "ok.png")


def test_new_user_inputs(tmp_path, monkeypatch):
    """A phone's HEIC photo, an image above Pillow's bomb guard, a non-ASCII file name in tf.data."""
    from ipg_keras.data.records import ImageRecord, records_to_dataset

    (tmp_path / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    with pytest.raises(ImageReadError, match="HEIF/HEIC or AVIF photo: convert it"):
        read_image(tmp_path / "IMG_0001.HEIC")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 pixels > 2 * 100: Pillow's bomb error
    with pytest.raises(ImageReadError, match="MAX_IMAGE_PIXELS"):
        read_image(tmp_path / "big.png")
    monkeypatch.undo()
    name = tmp_path / "café été 写真.png"
    Image.fromarray(np.full((6, 9, 3), 77, np.uint8)).save(name)
    ds = records_to_dataset([ImageRecord(str(name), 0, 9, 6, np.zeros((0, 4), np.float32), np.zeros(0, np.int32))])
    assert np.all(next(iter(ds))["images"].numpy() == 77)


def test_read_image_takes_an_open_binary_file():
    data = jpeg_bytes(np.full((8, 8, 3), 100, np.uint8))
    assert read_image(io.BytesIO(data)).shape == (8, 8, 3)
    with pytest.raises(ImageReadError, match="cannot read image"):
        read_image(io.BytesIO(b"nonsense"))


def test_voc_loader_reports_and_skips_a_truncated_image_and_goes_on(tmp_path):
    from data_helpers import write_voc_xml

    image = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    data = jpeg_bytes(image)
    (tmp_path / "good.jpg").write_bytes(data)
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    for name in ("good", "cut"):
        write_voc_xml(tmp_path / f"{name}.xml", f"{name}.jpg", (48, 32), [("car", (2, 2, 20, 20), False)])
    ds = from_pascal_voc(tmp_path)
    assert ds.report.files == {"corrupt_image": [str(tmp_path / "cut.jpg")]}
    assert [r.image_path for r in ds.records] == [str(tmp_path / "good.jpg")]
    assert [e["images"].shape for e in ds] == [(32, 48, 3)]


def test_decode_error_inside_tf_data_names_the_file(tmp_path):
    """A file that breaks after the load-time check (validate="header") fails naming itself."""
    from data_helpers import write_voc_xml

    data = jpeg_bytes(np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8))
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    write_voc_xml(tmp_path / "cut.xml", "cut.jpg", (48, 32), [("car", (2, 2, 20, 20), False)])
    ds = from_pascal_voc(tmp_path, validate="header")
    with pytest.raises(tf.errors.OpError, match=r"cut\.jpg"):
        list(ds)


def test_serving_decoder_refuses_what_it_cannot_decode_alike(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frames = [Image.fromarray(np.full((H, W, 3), v, np.uint8)) for v in (10, 200)]
    data = io.BytesIO()
    frames[0].save(data, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="animated WebP"):
        decode(tf.constant(data.getvalue()))
    assert np.all(read_image(io.BytesIO(data.getvalue())) == 10)  # the reader takes the first frame
    with pytest.raises(tf.errors.InvalidArgumentError, match="TIFF and other formats"):
        decode(tf.constant(b"II*\x00" + bytes(64)))
