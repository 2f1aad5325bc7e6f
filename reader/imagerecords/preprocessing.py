"""Decode, crop and resize one record's image as every reader path does: :func:`imagerecords.load`,
the segmentation reader (:mod:`imagerecords.segmentation`), the serving transform
(:mod:`imagerecords.transform`) and the job's embedding step.

* training: an Inception-style random crop -- a window covering 8% to 100% of the image's
  area with aspect ratio 3/4 to 4/3, drawn by ``tf.image.stateless_sample_distorted_bounding_box``
  (the parameters of Szegedy et al., *Going deeper with convolutions*, 2015, as in TF-slim's
  ``inception_preprocessing.py`` and Model Garden's ``official/vision/ops/preprocess_ops.py``),
  resized to ``S x S``, flipped left-right with probability 1/2;
* evaluation: the central square of side ``min(height, width)``, resized to ``S x S``.

JPEGs decode only the window (``tf.io.decode_and_crop_jpeg``, its size read from the header)
with the accurate integer IDCT (``contract.JPEG_DCT_METHOD``); other formats decode whole, then
crop; ``raw`` records are reshaped from their bytes with their shape keys.
"""

from typing import Optional

import tensorflow as tf

from imagerecords import contract

_MIN_OBJECT_COVERED = 0.1
_ASPECT_RATIO_RANGE = (3. / 4., 4. / 3.)
_AREA_RANGE = (0.08, 1.0)
_MAX_ATTEMPTS = 10


def image_feature_spec(raw: bool, return_filenames: bool) -> dict:
  """The ``tf.io.parse_single_example`` spec of a record's image (``image/encoded``; with
  ``raw``, also its int64 height, width and channels) and, with ``return_filenames``, its
  ``image/filename``."""
  spec = {contract.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string)}
  if raw:
    for key in (contract.IMAGE_HEIGHT, contract.IMAGE_WIDTH, contract.IMAGE_CHANNELS):
      spec[key] = tf.io.FixedLenFeature([], tf.int64)
  if return_filenames:
    spec[contract.FILENAME] = tf.io.FixedLenFeature([], tf.string, default_value='')
  return spec


def parse_raw_shape(features: dict) -> tf.Tensor:
  """int64 ``[3]``: (height, width, channels) of a raw record parsed with
  :func:`image_feature_spec` (``raw=True``)."""
  return tf.stack([features[contract.IMAGE_HEIGHT], features[contract.IMAGE_WIDTH],
                   features[contract.IMAGE_CHANNELS]])


def preprocess_image(encoded: tf.Tensor,
                     image_size: int,
                     training: bool,
                     seed: Optional[tf.Tensor] = None,
                     dtype: tf.dtypes.DType = tf.float32,
                     *,
                     channels: int = 3,
                     raw_shape: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Decodes, crops and resizes one encoded image (JPEG, PNG, ...) as :func:`load` does.

  Args:
    encoded: scalar tf.string, the encoded image (``image/encoded`` of a record).
    image_size: ``S``, the side of the output image, in pixels.
    training: Inception-style random crop + random flip (True), or central square crop (False).
    seed: shape ``[2]`` int32/int64 seed of the stateless random ops; required in training.
    dtype: floating output dtype (values in [0, 1]), or ``tf.uint8`` (values 0-255).
    channels: 3 (RGB) or 1 (grayscale): of the output, whatever the record holds.
    raw_shape: None for an encoded image; for a ``raw`` record (uint8 pixels, row-major), its
      int64 ``[height, width, channels]`` from the record's shape keys.

  Returns:
    ``dtype`` tensor of shape ``[S, S, channels]``, values in [0, 1] (0-255 for uint8).
  """
  if training:
    if seed is None:
      raise ValueError('preprocess_image(training=True) needs a seed of shape [2].')
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = _decode_window(encoded, lambda shape: random_window(shape, crop_seed), channels,
                           raw_shape)
  else:
    image = _decode_window(encoded, central_square, channels, raw_shape)
  image = _resize(image, image_size)
  if dtype == tf.uint8:
    image = tf.cast(tf.clip_by_value(tf.round(image), 0., 255.), tf.uint8)
  else:
    image = tf.cast(tf.clip_by_value(image / 255., 0., 1.), dtype)
  if training:  # after the cast: fewer bytes to move for narrow dtypes, the same pixels
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return image


def _decode_window(encoded: tf.Tensor, window_fn, channels: int = 3,
                   raw_shape: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Decodes the window ``window_fn(shape)`` of an image as uint8 ``[h, w, channels]``.

  ``window_fn`` maps the image's ``[height, width, channels]`` to ``[y, x, h, w]``. JPEG
  decodes only that window, its shape read from the header, with the accurate integer IDCT
  (``contract.JPEG_DCT_METHOD``); anything else decodes whole; raw
  pixels (``raw_shape`` given) are reshaped, then cropped.
  """
  if raw_shape is not None:
    image = tf.reshape(tf.io.decode_raw(encoded, tf.uint8), raw_shape)
    if channels == 1:
      image = tf.cond(tf.shape(image)[2] == 1, lambda: image,
                      lambda: tf.image.rgb_to_grayscale(image[..., :3]))
    else:
      image = tf.cond(tf.shape(image)[2] == 1, lambda: tf.image.grayscale_to_rgb(image),
                      lambda: image[..., :3])
    image = tf.ensure_shape(image, [None, None, channels])
    return _crop(image, window_fn(tf.shape(image)))

  def jpeg():
    window = window_fn(tf.image.extract_jpeg_shape(encoded))
    return tf.io.decode_and_crop_jpeg(encoded, window, channels=channels,
                                      dct_method=contract.JPEG_DCT_METHOD)

  def other():
    image = tf.io.decode_image(encoded, channels=channels, dtype=tf.uint8,
                               expand_animations=False)
    return _crop(image, window_fn(tf.shape(image)))

  return tf.cond(tf.io.is_jpeg(encoded), jpeg, other)


def _crop(image: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
  """The ``window`` (int32 ``[y, x, h, w]``, inside the image) of ``image`` ``[H, W, C]``.

  The pixels ``tf.image.crop_to_bounding_box`` gives, without its bounds checks: the windows of
  :func:`central_square` and :func:`random_window` lie inside the image by construction, and
  a check is an ``Assert`` op, which TensorFlow treats as a side effect. A function holding
  one runs it (and everything it depends on: the decode, crop and resize here) whenever it
  is called, even for outputs that do not need it; so, without them, tensorflow-transform's
  analysis of the job's ``--stats=tft`` transform skips the image ops entirely (the job's
  ``transforms/analysis/statistics_tft.py``).
  """
  y, x, h, w = tf.unstack(window)
  return image[y:y + h, x:x + w]  # keeps the static channel count


def central_square(shape: tf.Tensor) -> tf.Tensor:
  """``[y, x, s, s]``: the centred square window of side ``s = min(height, width)``."""
  height, width = shape[0], shape[1]
  side = tf.minimum(height, width)
  return tf.stack([(height - side) // 2, (width - side) // 2, side, side])


def random_window(shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """``[y, x, h, w]``: an Inception-style random crop window of an image of ``shape``."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape,
      bounding_boxes=tf.constant([0., 0., 1., 1.], shape=[1, 1, 4]),
      seed=seed,
      min_object_covered=_MIN_OBJECT_COVERED,
      aspect_ratio_range=_ASPECT_RATIO_RANGE,
      area_range=_AREA_RANGE,
      max_attempts=_MAX_ATTEMPTS,
      use_image_if_no_bounding_boxes=True)
  return tf.stack([begin[0], begin[1], size[0], size[1]])


def _resize(image: tf.Tensor, image_size: int) -> tf.Tensor:
  """float32 ``[S, S, C]`` in [0, 255]: bilinear; a plain cast if already S x S.

  Antialiased only when a side shrinks by more than 2x. Below that (every enlargement, where
  both give the same pixels, and the mild shrinking of most crops of a 256 px record) the plain
  bilinear resize, as TF-slim's and Model Garden's Inception-style crops use, costs about a
  third as much; the antialiasing filter was more than half of all the reader's per-image work
  (docs/benchmarks.md).
  """
  shape = tf.shape(image)[:2]
  already = tf.reduce_all(tf.equal(shape, image_size))
  strong_shrink = tf.reduce_any(shape > 2 * image_size)
  resized = tf.cond(
      already,
      lambda: tf.cast(image, tf.float32),
      lambda: tf.cond(
          strong_shrink,
          lambda: tf.image.resize(image, [image_size, image_size], antialias=True),
          lambda: tf.image.resize(image, [image_size, image_size])))
  return tf.ensure_shape(resized, [image_size, image_size, image.shape[-1]])
