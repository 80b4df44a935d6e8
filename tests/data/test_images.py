import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from retrain.data.images import ImageError, load_image


def _save(tmp_path, image: Image.Image, name: str, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


@pytest.mark.parametrize(
    "mode, name",
    [("L", "grey.png"), ("CMYK", "cmyk.jpg"), ("P", "palette.png"), ("RGBA", "alpha.png"), ("LA", "grey_alpha.png")],
)
def test_other_colour_modes_become_rgb(tmp_path, mode, name):
    image = Image.new("RGB", (30, 20), (200, 100, 50)).convert(mode)
    result = load_image(_save(tmp_path, image, name), 16)
    assert result.shape == (16, 16, 3) and result.dtype == np.uint8


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = np.full((10, 10), 32768, dtype=np.uint16)
    path = _save(tmp_path, Image.fromarray(values), "deep.png")
    assert Image.open(path).mode.startswith("I")
    result = load_image(path, 8)
    assert result.shape == (8, 8, 3)
    assert 120 <= result.mean() <= 135  # mid-grey, not saturated white


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left half red as stored
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree clockwise turn
    path = _save(tmp_path, image, "rotated.jpg", exif=exif.tobytes(), quality=95)
    result = load_image(path, 40).astype(int)
    top, bottom = result[:10].mean(axis=(0, 1)), result[-10:].mean(axis=(0, 1))
    assert top[0] > 200 and bottom[0] < 60  # the red half is now on top


def test_squashes_to_the_requested_width_and_height(tmp_path):
    path = _save(tmp_path, Image.new("RGB", (300, 100), (10, 20, 30)), "wide.jpg")
    assert load_image(path, (50, 40)).shape == (40, 50, 3)


def test_large_jpeg_is_decoded_at_reduced_scale_with_the_same_colour(tmp_path):
    path = _save(tmp_path, Image.new("RGB", (3200, 2400), (30, 140, 220)), "big.jpg", quality=90)
    result = load_image(path, 224).astype(int)
    assert result.shape == (224, 224, 3)
    assert np.abs(result.mean(axis=(0, 1)) - (30, 140, 220)).max() < 4


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.jpg", b"", "empty file"),
        ("text.jpg", b"this is not an image", "not an image"),
    ],
)
def test_unusable_files_are_reported_by_name(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError, match=reason) as info:
        load_image(path, 16)
    assert name in str(info.value)


def test_truncated_jpeg_is_reported_as_corrupt(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (200, 200), (1, 2, 3)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated") as info:
        load_image(path, 16)
    assert "cut.jpg" in str(info.value)


def test_absurdly_large_image_is_refused_before_decoding(tmp_path):
    path = _save(tmp_path, Image.new("1", (12000, 12000)), "bomb.png")
    with pytest.raises(ImageError, match="too large") as info:
        load_image(path, 16)
    assert "bomb.png" in str(info.value)


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixels: enough for the size check."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_a_too_large_image_is_refused_with_its_size_and_the_limit(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header(13000, 10000))
    with pytest.raises(ImageError, match=r"too large: 13000x10000 pixels \(130\.0 megapixels; the limit is 120 megapixels\)"):
        load_image(path, 32)


def test_a_110_megapixel_image_is_within_the_limit(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(_png_header(11000, 10000))
    with pytest.raises(ImageError) as info:  # no pixels in the file, but not refused for its size
        load_image(path, 32)
    assert "too large" not in str(info.value)


@pytest.fixture(scope="module")
def mediapipe_pixels(tmp_path_factory):
    """What MediaPipe's ImageEmbedder hands a 32x24 float model, read back through a model whose
    output is its input: the pixels MediaPipe prepares for any classifier we export."""
    import mediapipe as mp
    import tensorflow as tf
    from mediapipe.tasks.python import BaseOptions, vision

    from retrain.export import tflite_metadata

    width, height = 32, 24
    identity = tf.function(lambda x: tf.reshape(x, [1, -1]) * 1.0,
                           input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32)])
    model = tf.lite.TFLiteConverter.from_concrete_functions([identity.get_concrete_function()], identity).convert()
    described = tflite_metadata.meta.ModelMetadataT()
    described.subgraphMetadata = [tflite_metadata.meta.SubGraphMetadataT()]
    described.subgraphMetadata[0].inputTensorMetadata = [tflite_metadata._image_input(width, False)]
    described.subgraphMetadata[0].outputTensorMetadata = [tflite_metadata.meta.TensorMetadataT()]
    path = tmp_path_factory.mktemp("identity") / "identity.tflite"
    path.write_bytes(tflite_metadata.embed_metadata(model, described, {}))
    options = vision.ImageEmbedderOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                          l2_normalize=False, quantize=False)
    embedder = vision.ImageEmbedder.create_from_options(options)
    yield lambda pixels: np.array(embedder.embed(mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels))
                                  .embeddings[0].embedding).reshape(height, width, 3)
    embedder.close()


@pytest.mark.parametrize("shape", [(24, 32), (40, 45), (63, 50), (10, 7), (24, 300)])
def test_resize_gives_the_pixels_mediapipe_gives_a_model(mediapipe_pixels, shape):
    from retrain.data.images import resize_bilinear

    pixels = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_bilinear(pixels, 32, 24), mediapipe_pixels(pixels))


def test_an_image_twice_the_input_is_box_shrunk_before_the_resize(tmp_path):
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: a bilinear resize alone would alias them to black or white
    path = _save(tmp_path, Image.fromarray(stripes), "stripes.png")
    assert np.abs(load_image(path, 16).astype(int) - 128).max() <= 1


def test_an_image_held_in_memory_gives_the_pixels_its_file_gives(tmp_path):
    from retrain.data.images import ImageBytes, load_upright

    rng = np.random.default_rng(3)
    path = _save(tmp_path, Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)), "photo.jpg")
    held = ImageBytes("upload.jpg", path.read_bytes())
    np.testing.assert_array_equal(load_image(held, 64), load_image(path, 64))
    assert load_upright(held, 100).tobytes() == load_upright(path, 100).tobytes()


def test_an_image_under_eight_pixels_a_side_and_an_upload_over_its_own_limit_are_refused(tmp_path):
    from retrain.data.images import ImageBytes

    with pytest.raises(ImageError, match=r"dot.png: image is too small: 1x1 pixels \(the least is 8 pixels a side\)"):
        load_image(_save(tmp_path, Image.new("RGB", (1, 1)), "dot.png"), 16)
    assert load_image(_save(tmp_path, Image.new("RGB", (8, 8)), "small.png"), 16).shape == (16, 16, 3)
    data = (tmp_path / "small.png").read_bytes()
    with pytest.raises(ImageError, match=r"upload.png: image is too large: 8x8 pixels .*the limit is 5e-05 megapixels"):
        load_image(ImageBytes("upload.png", data, max_pixels=50), 16)
