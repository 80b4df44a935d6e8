"""Shades of Gray colour constancy inside the backbone (retrain.backbones.colour)."""

import numpy as np
import pytest

from retrain.backbones.colour import IDENTITY_SUFFIX, shades_of_gray

TINT = np.array([1.25, 0.95, 0.7])


def reference(image: np.ndarray, power: int = 6) -> np.ndarray:
    """Gessert et al.'s colour_constancy (ISIC 2018/2019), in float: no rounding to uint8 at the end."""
    illuminant = np.power(np.mean(np.power(image, power), axis=(0, 1)), 1 / power)
    gains = np.linalg.norm(illuminant) / (np.sqrt(3) * illuminant)
    return np.clip(image * gains, 0, 255)


def illuminant(image: np.ndarray, power: int = 6) -> np.ndarray:
    return np.power(np.mean(np.power(image, power), axis=(0, 1)), 1 / power)


def tinted(image: np.ndarray) -> np.ndarray:
    """`image` under another illuminant of the same norm: what colour constancy removes entirely."""
    tint = TINT * np.linalg.norm(illuminant(image)) / np.linalg.norm(illuminant(image * TINT))
    return image * tint


def lesion(seed: int = 0, size: int = 40) -> np.ndarray:
    """A skin-coloured, noisy image with a darker blob: what dermoscopy looks like to the statistic."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    blob = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2)[..., None]
    skin = np.array([200.0, 150.0, 140.0]) + rng.normal(0, 10, (size, size, 3))
    return np.clip(np.where(blob, skin * 0.45, skin), 0, 255)


def test_matches_the_numpy_reference():
    images = np.stack([lesion(0), np.clip(lesion(1) * TINT, 0, 255)]).astype(np.float32)
    got = shades_of_gray(images).numpy()
    want = np.stack([reference(image.astype(np.float64)) for image in images])
    np.testing.assert_allclose(got, want, atol=1e-2)


def test_a_tinted_copy_comes_out_as_the_untinted_image_up_to_its_brightness():
    """The illuminant moves to grey of its own norm, so a tint leaves only a change of brightness."""
    image = lesion(2) * 0.8  # no channel clipped by the tint, so the tint is exactly an illuminant change
    tinted = image * TINT
    assert np.abs(tinted - image).mean() > 20
    plain, corrected = shades_of_gray(np.stack([image, tinted]).astype(np.float32)).numpy()
    brightness = corrected.sum() / plain.sum()
    assert 0.8 < brightness < 1.2
    np.testing.assert_allclose(corrected / brightness, plain, atol=0.05)


def test_a_grey_illuminant_leaves_the_image_as_it_is_and_black_stays_black():
    grey = np.full((1, 8, 8, 3), 120.0, np.float32)
    black = np.zeros((1, 8, 8, 3), np.float32)
    np.testing.assert_allclose(shades_of_gray(grey).numpy(), grey, atol=1e-3)
    out = shades_of_gray(black).numpy()
    assert np.isfinite(out).all() and np.abs(out).max() == 0


def test_the_output_stays_in_the_pixel_range():
    image = np.full((1, 16, 16, 3), 200.0, np.float32)
    image[..., 2] = 10.0
    image[0, 0, 0, 2] = 255.0  # one bright blue pixel in a blue-less image: the blue gain takes it past 255
    out = shades_of_gray(image).numpy()
    assert out.min() >= 0 and out.max() == 255 and out[0, 0, 0, 2] == 255


@pytest.mark.parametrize("option", [False, True])
def test_the_backbone_identity_names_the_option(tmp_path, option):
    from retrain import paths
    from retrain.backbones import create_backbone

    backbone = create_backbone("efficientnet_lite0", paths.default_model_dir(), colour_constancy=option)
    assert backbone.identity.endswith(IDENTITY_SUFFIX) == option
    assert backbone.config.colour_constancy == option


def test_the_backbone_divides_out_a_tint_before_its_features(backbone):
    from retrain import paths
    from retrain.backbones import create_backbone

    constant = create_backbone("efficientnet_lite0", paths.default_model_dir(), colour_constancy=True)
    image = np.clip(lesion(4, size=224) * 0.8, 0, 255)
    pair = np.stack([image, tinted(image)]).astype(np.float32)
    plain = backbone.module.features(pair).numpy()
    corrected = constant.module.features(pair).numpy()
    assert np.abs(corrected[0] - corrected[1]).max() < 0.02 * np.abs(corrected[0]).max()
    assert np.abs(plain[0] - plain[1]).max() > 10 * np.abs(corrected[0] - corrected[1]).max()


def test_a_keras_backbone_divides_out_a_tint_too(tmp_path):
    from retrain.backbones import create_backbone

    plain = create_backbone("mobilenet_v3_small", tmp_path, random_weights=True)
    constant = create_backbone("mobilenet_v3_small", tmp_path, random_weights=True, colour_constancy=True)
    constant.module.model.set_weights(plain.module.model.get_weights())
    assert constant.identity.endswith(IDENTITY_SUFFIX) and not plain.identity.endswith(IDENTITY_SUFFIX)
    image = np.clip(lesion(5, size=224) * 0.8, 0, 255)
    pair = np.stack([image, tinted(image)]).astype(np.float32)
    corrected = constant.module.features(pair).numpy()
    changed = plain.module.features(pair).numpy()
    assert np.abs(corrected[0] - corrected[1]).max() < 0.2 * np.abs(changed[0] - changed[1]).max()
