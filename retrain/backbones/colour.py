"""Colour constancy inside the model: Shades of Gray (Finlayson and Trezzi 2004) with Minkowski
p = 6, as Barata et al. 2015 found best for dermoscopy and the ISIC 2018 and 2019 winners
(Gessert et al.) applied to every image.

Each image's illuminant is e_c = (mean over pixels of x_c^p)^(1/p) per RGB channel, and each
channel is scaled by |e| / (sqrt(3) e_c): Gessert et al.'s form, which keeps a grey
illuminant's image as it is and moves every other one to grey of the same norm. The result is
clipped to [0, 255]; an illuminant channel darker than 13 of 255 counts as 13 (MIN_ILLUMINANT).
It runs first in the backbone, before the normalisation, so bottleneck caching, fine-tuning and
every export do it with no code of their own.
"""

from __future__ import annotations

POWER = 6
# Recorded in the model card: what the model does to the pixels before its normalisation.
DESCRIPTION = (f"Shades of Gray, Minkowski p = {POWER}: x_c * |e| / (sqrt(3) * e_c), "
               f"e_c = mean(x_c^{POWER})^(1/{POWER}) per image and channel (at least 13 of 255), clipped to [0, 255]")
IDENTITY_SUFFIX = f"-shades_of_gray{POWER}"  # a backbone with colour constancy caches other features
EPSILON = 1e-6  # keeps the root of an all-black channel differentiable; in [0, 1] units
# The least illuminant divided by, in [0, 1] units (13 of 255): an int8 .tflite quantizes the
# illuminant, and one that rounds to its zero point stops LiteRT's DIV. Only a channel black nearly
# everywhere is this dark; its gain is then at most |e| / (sqrt(3) * 0.05).
MIN_ILLUMINANT = 0.05


def shades_of_gray(images):
    """[N, h, w, 3] float pixels in [0, 255] with each image's illuminant divided out.

    The power is taken of the pixels over their channel's brightest one: the same illuminant,
    mean(x^p)^(1/p) = peak * mean((x / peak)^p)^(1/p), but with the mean in [1/pixels, 1] whatever
    the image's brightness, so an int8 .tflite, which rounds it to 1/255 steps, still measures a
    dim channel."""
    import tensorflow as tf

    scaled = images / 255.0
    peak = tf.maximum(tf.reduce_max(scaled, axis=[1, 2], keepdims=True), MIN_ILLUMINANT)
    relative = scaled / peak
    squared = relative * relative
    mean = tf.reduce_mean(squared * squared * squared, axis=[1, 2], keepdims=True)
    illuminant = tf.maximum(peak * tf.pow(mean + EPSILON ** POWER, 1.0 / POWER), MIN_ILLUMINANT)
    norm = tf.sqrt(tf.reduce_sum(tf.square(illuminant), axis=3, keepdims=True))
    gains = norm / (3.0 ** 0.5 * illuminant)
    return tf.clip_by_value(images * gains, 0.0, 255.0)
