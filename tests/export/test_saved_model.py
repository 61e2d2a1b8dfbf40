"""SavedModel export: signatures, TF Serving requests, untrusted bytes, TF's own tools, fresh process."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import tensorflow as tf
from export_helpers import VENV_BIN, run_subprocess, valid

from export_helpers import SAVED_MODEL_MAX_PIXELS as MAX_PIXELS  # 100 * 100: tested with small images

# Every check runs for both detectors (the tiny trained models of conftest.py).
pytestmark = pytest.mark.parametrize("detector", ["retinanet", "faster_rcnn"], indirect=True, scope="session")


@pytest.fixture(scope="module")
def loaded(saved_model_dir):
    return tf.saved_model.load(str(saved_model_dir))


def keras_reference(model, image_uint8: np.ndarray, size: int = 64) -> dict:
    """What Keras predicts for one image of any size, boxes mapped to its pixels (as the pipeline does)."""
    from ipg_keras.data import resize_and_pad

    element = {"images": tf.cast(image_uint8, tf.float32),
               "bounding_boxes": {"boxes": tf.zeros([0, 4]), "classes": tf.zeros([0], tf.int32)}}
    resized, scale = resize_and_pad(element, size)
    pred = valid(model.predict_on_batch(resized["images"].numpy()[None]), 0)
    h, w = image_uint8.shape[:2]
    boxes = pred["boxes"] / float(scale)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
    return {**pred, "boxes": boxes}


def assert_same_detections(got: dict, want: dict, atol: float = 1e-4):
    assert len(got["scores"]) == len(want["scores"]) > 0
    np.testing.assert_array_equal(got["classes"], want["classes"])
    np.testing.assert_allclose(got["scores"], want["scores"], atol=atol)
    np.testing.assert_allclose(got["boxes"], want["boxes"], atol=atol)


def _outputs_np(out) -> dict:
    return {k: v.numpy() for k, v in out.items()}


def test_serving_default_matches_keras_predict(trained_model, loaded, uint8_val_images):
    images = uint8_val_images[:4]
    out = _outputs_np(loaded.signatures["serving_default"](images=tf.constant(images)))
    assert sorted(out) == ["boxes", "classes", "num_detections", "scores"]
    assert out["boxes"].dtype == np.float32 and out["classes"].dtype == np.int32
    keras_pred = trained_model.predict_on_batch(images.astype(np.float32))
    for b in range(len(images)):
        assert_same_detections(valid(out, b), valid(keras_pred, b))
    # Padding past num_detections: score 0, class -1.
    n = int(out["num_detections"][0])
    assert np.all(out["classes"][0, n:] == -1) and np.all(out["scores"][0, n:] == 0)


def test_serving_default_resizes_any_size_and_returns_original_pixels(trained_model, loaded, uint8_val_images):
    # A 128 x 96 image (scale 0.5) and a 40 x 52 one (upscaled): boxes come back in their own pixels.
    big = tf.image.resize(uint8_val_images[:1].astype(np.float32), [128, 128], "nearest").numpy()[:, :, :96]
    for image in (big.astype(np.uint8)[0], uint8_val_images[1, :40, :52]):
        out = _outputs_np(loaded.signatures["serving_default"](images=tf.constant(image[None])))
        got = valid(out, 0)
        assert_same_detections(got, keras_reference(trained_model, image))
        assert got["boxes"][:, [0, 2]].max() <= image.shape[1] and got["boxes"][:, [1, 3]].max() <= image.shape[0]


def _png(image) -> bytes:
    return tf.io.encode_png(image).numpy()


def _jpeg(image) -> bytes:
    return tf.io.encode_jpeg(image, quality=95).numpy()


def test_serving_bytes_batch_of_different_sizes(trained_model, loaded, uint8_val_images):
    images = [uint8_val_images[0], uint8_val_images[1, :48, :60], uint8_val_images[2, :32, :64]]
    encoded = [_png(images[0]), _jpeg(images[1]), _png(images[2])]
    out = _outputs_np(loaded.signatures["serving_bytes"](image_bytes=tf.constant(encoded)))
    decoded = [images[0], tf.io.decode_jpeg(encoded[1], dct_method="INTEGER_ACCURATE").numpy(), images[2]]
    for b, image in enumerate(decoded):
        assert_same_detections(valid(out, b), keras_reference(trained_model, image))


def test_serving_bytes_decodes_files_as_read_image_does(loaded, uint8_val_images, tmp_path):
    """serving_bytes on encoded files == serving_default on `read_image`'s pixels of the same files:
    16-bit PNG (full-scale rule), EXIF-rotated JPEG, RGBA PNG, palette BMP, GIF, WebP."""
    import io

    from PIL import Image

    from ipg_keras.data.image_io import read_image

    image = uint8_val_images[0]
    files = {}
    files["gray16.png"] = tf.io.encode_png((image[..., :1].astype(np.uint16) * 257 + 100)).numpy()
    exif = Image.Exif()
    exif[0x0112] = 6
    for name, kwargs in {"rotated.jpg": {"exif": exif, "quality": 95}, "rgba.png": {}, "palette.bmp": {},
                         "frame.gif": {}, "photo.webp": {"quality": 90}}.items():
        im = Image.fromarray(image)
        if name == "rgba.png":
            im = Image.fromarray(np.dstack([image, np.full(image.shape[:2], 128, np.uint8)]), "RGBA")
        elif name in ("palette.bmp", "frame.gif"):
            im = im.convert("P", palette=Image.Palette.ADAPTIVE)
        data = io.BytesIO()
        im.save(data, name.split(".")[1].replace("jpg", "jpeg").upper(), **kwargs)
        files[name] = data.getvalue()
    out = _outputs_np(loaded.signatures["serving_bytes"](image_bytes=tf.constant(list(files.values()))))
    for b, (name, data) in enumerate(files.items()):
        (tmp_path / name).write_bytes(data)
        pixels = read_image(tmp_path / name)
        if name == "rotated.jpg":
            assert pixels.shape[:2] == image.shape[1::-1]
        want = _outputs_np(loaded.signatures["serving_default"](images=tf.constant(pixels[None])))
        assert_same_detections(valid(out, b), valid(want, 0))


def _huge_png_header(image) -> bytes:
    data = bytearray(_png(image))
    data[16:24] = (100_000).to_bytes(4, "big") + (100_000).to_bytes(4, "big")  # IHDR width, height
    return bytes(data)


def _huge_jpeg_header(image) -> bytes:
    data = bytearray(_jpeg(image))
    sof = data.index(b"\xff\xc0")  # baseline SOF0: marker, length(2), precision(1), height(2), width(2)
    data[sof + 5 : sof + 9] = (60_000).to_bytes(2, "big") + (60_000).to_bytes(2, "big")
    return bytes(data)


def _rle_bmp() -> bytes:
    import io

    from PIL import Image

    data = io.BytesIO()
    Image.new("P", (8, 8)).save(data, "BMP")
    patched = bytearray(data.getvalue())
    patched[30:34] = (1).to_bytes(4, "little")  # biCompression = BI_RLE8, which TensorFlow cannot decode
    return bytes(patched)


@pytest.mark.parametrize(
    "case, message",
    [
        ("text", "not a JPEG, PNG, BMP, GIF or WebP"),
        ("empty", "not a JPEG, PNG, BMP, GIF or WebP"),
        ("tiff", "TIFF and other formats cannot be decoded in TensorFlow"),
        ("gif", "zero height or width"),
        ("bmp_rle", "BMP with"),
        ("png_magic_only", "truncated"),
        ("corrupt_jpeg_header", ""),
        ("truncated_jpeg", ""),
        ("truncated_png", ""),
        ("png_over_limit", "above the limit"),
        ("huge_png_header", "above the limit"),
        ("huge_jpeg_header", "above the limit"),
    ],
)
def test_serving_bytes_rejects_untrusted_input(loaded, uint8_val_images, case, message):
    image = uint8_val_images[0]
    big = np.tile(image, (2, 2, 1))[:120, :120]  # 14400 px > MAX_PIXELS
    data = {
        "text": b"hello, this is not an image",
        "empty": b"",
        "gif": b"GIF89a" + bytes(50),
        "tiff": b"II*\x00" + bytes(50),
        "bmp_rle": _rle_bmp(),
        "png_magic_only": b"\x89PNG\r\n\x1a\n" + b"\x00" * 10,
        "corrupt_jpeg_header": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4,
        "truncated_jpeg": _jpeg(image)[: len(_jpeg(image)) // 2],
        "truncated_png": _png(image)[: len(_png(image)) // 2],
        "png_over_limit": _png(big),
        "huge_png_header": _huge_png_header(image),
        "huge_jpeg_header": _huge_jpeg_header(image),
    }[case]
    serve = loaded.signatures["serving_bytes"]
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        serve(image_bytes=tf.constant([_png(image), data]))
    assert message in str(info.value)
    # The model keeps serving after a rejected request.
    ok = serve(image_bytes=tf.constant([_png(image)]))
    assert int(ok["num_detections"][0]) > 0


def test_serving_bytes_rejects_oversized_batch(loaded, uint8_val_images):
    from ipg_keras.export import DEFAULT_MAX_BATCH_SIZE

    with pytest.raises(tf.errors.InvalidArgumentError, match="per request"):
        loaded.signatures["serving_bytes"](image_bytes=tf.constant([b"x"] * (DEFAULT_MAX_BATCH_SIZE + 1)))


# ------------------------------------------------------------------- TF Serving client contract
def _signature_def(saved_model_dir, name):
    from tensorflow.python.tools import saved_model_utils

    return saved_model_utils.get_meta_graph_def(str(saved_model_dir), "serve").signature_def[name]


def _serve_predict_request(saved_model_dir, loaded, wire: bytes) -> bytes:
    """What TF Serving does with a serialized PredictRequest: check it against the
    SignatureDef, feed the tensors, answer a serialized PredictResponse."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest.FromString(wire)
    name = request.model_spec.signature_name or "serving_default"
    sigdef = _signature_def(saved_model_dir, name)
    assert set(request.inputs) == set(sigdef.inputs), (set(request.inputs), set(sigdef.inputs))
    for alias, tensor in request.inputs.items():
        assert tensor.dtype == sigdef.inputs[alias].dtype, alias
    feeds = {alias: tf.constant(tf.make_ndarray(t)) for alias, t in request.inputs.items()}
    outputs = loaded.signatures[name](**feeds)
    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(request.model_spec)
    for key, value in outputs.items():
        assert key in sigdef.outputs
        response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
    return response.SerializeToString()


def test_grpc_predict_request_from_tensorflow_serving_api(trained_model, saved_model_dir, loaded, uint8_val_images):
    from tensorflow_serving.apis import predict_pb2

    images = [uint8_val_images[0], uint8_val_images[3, :50, :64]]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "ipg"
    request.model_spec.signature_name = "serving_bytes"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([_png(im) for im in images]))
    response = predict_pb2.PredictResponse.FromString(
        _serve_predict_request(saved_model_dir, loaded, request.SerializeToString())
    )
    out = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    assert sorted(out) == ["boxes", "classes", "num_detections", "scores"]
    for b, image in enumerate(images):
        assert_same_detections(valid(out, b), keras_reference(trained_model, image))

    # serving_default over gRPC: a uint8 batch.
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "ipg"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(uint8_val_images[:2]))
    response = predict_pb2.PredictResponse.FromString(
        _serve_predict_request(saved_model_dir, loaded, request.SerializeToString())
    )
    out = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    keras_pred = trained_model.predict_on_batch(uint8_val_images[:2].astype(np.float32))
    for b in range(2):
        assert_same_detections(valid(out, b), valid(keras_pred, b))


def _rest_to_feeds(body: str, sigdef) -> dict:
    """TF Serving's REST `predict` JSON -> signature feeds (row `instances` or columnar `inputs`;
    `{"b64": ...}` objects are base64-decoded to bytes), as its json_tensor conversion does."""
    request = json.loads(body)

    def decode(value):
        if isinstance(value, dict) and set(value) == {"b64"}:
            return base64.b64decode(value["b64"])
        if isinstance(value, list):
            return [decode(v) for v in value]
        return value

    names = list(sigdef.inputs)
    if "instances" in request:
        rows = [decode(r) for r in request["instances"]]
        if len(names) == 1 and not (rows and isinstance(rows[0], dict)):
            columns = {names[0]: rows}
        else:
            columns = {n: [r[n] for r in rows] for n in names}
    else:
        inputs = request["inputs"]
        columns = {names[0]: decode(inputs)} if not isinstance(inputs, dict) else {k: decode(v) for k, v in inputs.items()}
    feeds = {}
    for name, value in columns.items():
        dtype = tf.dtypes.as_dtype(sigdef.inputs[name].dtype)
        feeds[name] = tf.constant(value, dtype=dtype)
    return feeds


def test_rest_json_b64_request(trained_model, saved_model_dir, loaded, uint8_val_images):
    images = [uint8_val_images[4], uint8_val_images[5, :64, :40]]
    body = json.dumps({
        "signature_name": "serving_bytes",
        "instances": [{"b64": base64.b64encode(_jpeg(im)).decode()} for im in images],
    })
    sigdef = _signature_def(saved_model_dir, "serving_bytes")
    out = _outputs_np(loaded.signatures["serving_bytes"](**_rest_to_feeds(body, sigdef)))
    # TF Serving's row-format answer: one {output: value} object per instance, JSON-serializable.
    predictions = [{k: v[b].tolist() for k, v in out.items()} for b in range(len(images))]
    reply = json.loads(json.dumps({"predictions": predictions}))
    for b, image in enumerate(images):
        got = {k: np.asarray(reply["predictions"][b][k])[None] for k in out}
        decoded = tf.io.decode_jpeg(_jpeg(image), dct_method="INTEGER_ACCURATE").numpy()  # as read_image
        want = keras_reference(trained_model, decoded)
        assert_same_detections(valid(got, 0), want)

    # serving_default with the uint8 image as nested lists.
    body = json.dumps({"instances": [uint8_val_images[0].tolist()]})
    sigdef = _signature_def(saved_model_dir, "serving_default")
    out = _outputs_np(loaded.signatures["serving_default"](**_rest_to_feeds(body, sigdef)))
    keras_pred = trained_model.predict_on_batch(uint8_val_images[:1].astype(np.float32))
    assert_same_detections(valid(out, 0), valid(keras_pred, 0))


# ------------------------------------------------------------- TensorFlow's tools, fresh process
def test_saved_model_cli_show_and_run(trained_model, saved_model_dir, uint8_val_images, tmp_path):
    cli = VENV_BIN / "saved_model_cli"
    if not cli.exists():
        pytest.skip(f"saved_model_cli not found next to {VENV_BIN}")
    shown = run_subprocess([cli, "show", "--dir", saved_model_dir, "--all"])
    assert shown.returncode == 0, shown.stderr[-2000:]
    text = shown.stdout
    for expected in ("signature_def['serving_default']", "signature_def['serving_bytes']",
                     "inputs['images'] tensor_info", "inputs['image_bytes'] tensor_info",
                     "dtype: DT_UINT8", "dtype: DT_STRING", "shape: (-1, -1, -1, 3)", "shape: (-1)",
                     "outputs['boxes']", "outputs['scores']", "outputs['classes']", "outputs['num_detections']"):
        assert expected in text, f"{expected!r} not in saved_model_cli show output:\n{text[-3000:]}"

    # One run (each is a fresh TensorFlow process): serving_bytes fed a numpy array of PNG bytes.
    images = uint8_val_images[:2]
    np.save(tmp_path / "bytes.npy", np.array([_png(images[0]), _png(images[1, :40, :64])], dtype=np.bytes_))
    ran = run_subprocess([cli, "run", "--dir", saved_model_dir, "--tag_set", "serve", "--signature_def",
                          "serving_bytes", "--inputs", f"image_bytes={tmp_path / 'bytes.npy'}",
                          "--outdir", tmp_path / "run"])
    assert ran.returncode == 0, ran.stderr[-2000:]
    out = {k: np.load(tmp_path / "run" / f"{k}.npy") for k in ("boxes", "scores", "classes", "num_detections")}
    assert_same_detections(valid(out, 0), valid(trained_model.predict_on_batch(images[:1].astype(np.float32)), 0))
    assert_same_detections(valid(out, 1), keras_reference(trained_model, images[1, :40, :64]))


def test_load_in_fresh_process_without_the_package(trained_model, saved_model_dir, uint8_val_images, tmp_path):
    images = uint8_val_images[:3]
    np.save(tmp_path / "images.npy", images)
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        f"m = tf.saved_model.load({str(saved_model_dir)!r})\n"
        f"x = np.load({str(tmp_path / 'images.npy')!r})\n"
        "out = m.signatures['serving_default'](images=tf.constant(x))\n"
        f"np.savez({str(tmp_path / 'out.npz')!r}, **{{k: v.numpy() for k, v in out.items()}})\n"
        "assert not any(name.startswith('ipg_keras') for name in sys.modules), 'needed ipg_keras'\n"
    )
    ran = run_subprocess([VENV_BIN / "python", "-c", script])
    assert ran.returncode == 0, ran.stderr[-2000:]
    out = dict(np.load(tmp_path / "out.npz"))
    keras_pred = trained_model.predict_on_batch(images.astype(np.float32))
    for b in range(len(images)):
        assert_same_detections(valid(out, b), valid(keras_pred, b))


def test_metadata_documents_the_export(saved_model_dir):
    from ipg_keras.export import read_metadata

    meta = read_metadata(saved_model_dir)
    assert meta["image_size"] == [64, 64] and meta["max_pixels"] == MAX_PIXELS
    assert meta["output_names"] == ["boxes", "scores", "classes", "num_detections"]
    assert meta["num_classes"] == 5


def test_export_rejects_bad_arguments(trained_model, tmp_path):
    from ipg_keras.export import export_saved_model

    with pytest.raises(ValueError, match="multiple of the model's size_multiple 32"):
        export_saved_model(trained_model, tmp_path / "x", image_size=100)
    with pytest.raises(TypeError, match="detect"):
        export_saved_model(object(), tmp_path / "y", image_size=64)
