"""Segmentation records: ``(image, mask)`` pairs with the same crop and flip applied to both.

:func:`imagerecords.load` uses this module when the output's manifest says
``"task": "segmentation"`` (the Beam job's ``--masks``): each record holds the image and a PNG
of its class indices (``image/segmentation/class/encoded``), the same height and width.

Per example (``S`` = ``image_size``):

* training: one Inception-style random window (the same parameters as classification, see
  :mod:`imagerecords.dataset`), drawn once from the record's size and cut from both the image
  and the mask; the image is resized bilinearly (antialiased), the mask with nearest-neighbour
  (pixel-centre aligned, so it holds only values of the stored mask, 255 = void included); then
  both are flipped left-right together, with probability 1/2.
* evaluation: the central square of both, resized the same way; deterministic.

Masks come out as int32 ``[S, S]`` class indices (the stored mask is 8-bit; int32 is what
Keras's sparse categorical losses and ``tf.math.confusion_matrix`` take). 255 is the void class
(``contract.MASK_VOID``): mask it out of the loss, e.g. with sample weights
``tf.cast(masks != 255, tf.float32)`` after replacing 255 by 0.
"""

from typing import Optional

import tensorflow as tf

from imagerecords import contract
from imagerecords.preprocessing import (central_square, image_feature_spec, parse_raw_shape,
                                        random_window)


def make_decode_fn(image_size: int, training: bool, dtype: tf.dtypes.DType,
                   return_filenames: bool, channels: int = 3, raw: bool = False):
  """The per-example map function of a segmentation split: serialized record (+ seed in
  training) -> ``(image, mask[, filename])`` (see :func:`preprocess_pair`)."""
  spec = image_feature_spec(raw, return_filenames)
  spec[contract.MASK_ENCODED] = tf.io.FixedLenFeature([], tf.string)

  def decode(serialized, seed=None):
    features = tf.io.parse_single_example(serialized, spec)
    image, mask = preprocess_pair(
        features[contract.IMAGE_ENCODED], features[contract.MASK_ENCODED], image_size,
        training, seed=seed, dtype=dtype, channels=channels,
        raw_shape=parse_raw_shape(features) if raw else None)
    if return_filenames:
      return image, mask, features[contract.FILENAME]
    return image, mask

  return decode


def preprocess_pair(encoded: tf.Tensor,
                    encoded_mask: tf.Tensor,
                    image_size: int,
                    training: bool,
                    seed: Optional[tf.Tensor] = None,
                    dtype: tf.dtypes.DType = tf.float32,
                    *,
                    channels: int = 3,
                    raw_shape: Optional[tf.Tensor] = None):
  """Decodes, crops, resizes (and in training flips) an image and its mask identically.

  Args:
    encoded: scalar tf.string, the record's ``image/encoded`` (JPEG, PNG; or raw pixels with
      ``raw_shape``).
    encoded_mask: scalar tf.string, the record's ``image/segmentation/class/encoded`` (PNG of
      class indices, the image's height and width).
    image_size: ``S``, the side of the outputs, in pixels.
    training: one random window + random flip for both (True), or the central square (False).
    seed: shape ``[2]`` int32/int64 seed of the stateless random ops; required in training.
    dtype: floating dtype of the image (values in [0, 1]), or ``tf.uint8`` (values 0-255).
    channels: of the output image: 3 (RGB) or 1.
    raw_shape: int64 ``[height, width, channels]`` of a ``raw`` record; None otherwise.

  Returns:
    ``(image, mask)``: ``dtype [S, S, channels]`` and int32 ``[S, S]`` class indices.
  """
  mask = tf.io.decode_png(encoded_mask, channels=1)  # uint8 [h, w, 1]; grayscale = indices
  shape = tf.shape(mask)
  if training:
    if seed is None:
      raise ValueError('preprocess_pair(training=True) needs a seed of shape [2].')
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    window = random_window(shape, crop_seed)
  else:
    window = central_square(shape)
  image = _decode_image_window(encoded, window, channels, raw_shape)
  y, x, h, w = tf.unstack(window)
  mask = tf.image.crop_to_bounding_box(mask, y, x, h, w)
  size = [image_size, image_size]
  already = tf.reduce_all(tf.equal(tf.shape(mask)[:2], image_size))
  image = tf.cond(already, lambda: tf.cast(image, tf.float32),
                  lambda: tf.image.resize(image, size, antialias=True))
  mask = tf.cond(already, lambda: mask,
                 lambda: tf.image.resize(mask, size, method='nearest'))  # keeps uint8
  if training:
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    mask = tf.cond(flip, lambda: tf.reverse(mask, [1]), lambda: mask)
  if tf.as_dtype(dtype) == tf.uint8:
    image = tf.cast(tf.clip_by_value(tf.round(image), 0., 255.), tf.uint8)
  else:
    image = tf.cast(tf.clip_by_value(image / 255., 0., 1.), dtype)
  image = tf.ensure_shape(image, [image_size, image_size, channels])
  mask = tf.ensure_shape(tf.cast(mask[:, :, 0], tf.int32), [image_size, image_size])
  return image, mask


def _decode_image_window(encoded, window, channels, raw_shape):
  """uint8 ``[h, w, channels]``: the ``[y, x, h, w]`` window of the image (JPEG decodes only
  the window, with the accurate integer IDCT of ``contract.JPEG_DCT_METHOD``; other formats
  decode whole, then crop)."""
  y, x, h, w = tf.unstack(window)
  if raw_shape is not None:
    image = tf.reshape(tf.io.decode_raw(encoded, tf.uint8), tf.cast(raw_shape, tf.int32))
    image = _to_channels(tf.image.crop_to_bounding_box(image, y, x, h, w), channels)
    return image

  def jpeg():
    return tf.io.decode_and_crop_jpeg(encoded, window, channels=channels,
                                      dct_method=contract.JPEG_DCT_METHOD)

  def other():
    image = tf.io.decode_image(encoded, channels=channels, dtype=tf.uint8,
                               expand_animations=False)
    return tf.image.crop_to_bounding_box(image, y, x, h, w)

  return tf.cond(tf.io.is_jpeg(encoded), jpeg, other)


def _to_channels(image, channels):
  """A raw uint8 image with 1 or 3 channels, converted to ``channels``."""
  if channels == 3:
    return tf.cond(tf.equal(tf.shape(image)[2], 1),
                   lambda: tf.image.grayscale_to_rgb(image), lambda: image)
  return tf.cond(tf.equal(tf.shape(image)[2], 3),
                 lambda: tf.cast(tf.round(tf.image.rgb_to_grayscale(
                     tf.cast(image, tf.float32))), tf.uint8),
                 lambda: image)
