"""Read, decode, resize and re-encode each image into a ``tf.train.Example``, in one ParDo.

Image bytes are read inside the DoFn through Beam's ``FileSystems`` (local, ``gs://``,
``s3://``): only paths travel through the graph. An input that is gone, denied or cannot be
decoded becomes a ``Failure`` on the ``failures`` output with a reason, and the run goes on; a
read that keeps failing for a transient reason fails the run instead (``transforms.files.reads``).
"""

import hashlib
from typing import Dict, Iterable, List, Optional

import apache_beam as beam

from transforms import process_exit
from transforms.files import reads
from transforms.image import codec, image_measures
from transforms.image import masks
from transforms.elements import (FAILURES_TAG, STAGE_DECODE, STAGE_READ, ConvertedExample,
                                 Failure, LabeledImage)
from transforms.elements import METRICS_NAMESPACE, STAGE_MASK
from transforms.image.example import build_example
from transforms.image.pixel_sums import pixel_sums, stored_pixels
from transforms.image.progress import ProgressFile


class _ConvertImageFn(beam.DoFn):
  """LabeledImage -> ConvertedExample, or Failure at stage ``read`` or ``decode``.

  Side inputs ``class_names``: the sorted list of class names (class id = index); ``total``:
  the number of images to convert in the whole job (the ``images_to_convert`` gauge, and the
  progress files' total). Examples of ``stats_split`` carry their stored image's pixel sums
  (``transforms.image.pixel_sums``). With ``measure``, examples carry their stored pixels'
  ``transforms.image.image_measures`` (not for ``--image_format=original`` or segmentation, whose
  pixels are not at hand). With ``progress_dir`` (local runs), each instance keeps its counts
  in a file there (``transforms.image.progress``).
  """

  def __init__(self, spec: codec.ImageSpec, stats_split: Optional[str] = None,
               measure: bool = True, progress_dir: Optional[str] = None):
    self._spec = spec
    self._stats_split = stats_split
    self._measure = measure
    self._progress_dir = progress_dir
    self._to_convert = beam.metrics.Metrics.gauge(METRICS_NAMESPACE, 'images_to_convert')
    self._converted = beam.metrics.Metrics.counter(METRICS_NAMESPACE, 'images_converted')
    self._failed = {stage: beam.metrics.Metrics.counter(METRICS_NAMESPACE, f'images_failed_{stage}')
                    for stage in (STAGE_READ, STAGE_DECODE, STAGE_MASK)}
    self._read = beam.metrics.Metrics.counter(METRICS_NAMESPACE, 'images_read')
    self._bytes_read = beam.metrics.Metrics.counter(METRICS_NAMESPACE, 'source_bytes_read')
    self._bytes_out = beam.metrics.Metrics.counter(METRICS_NAMESPACE, 'record_bytes_out')

  def setup(self):
    self._class_ids: Dict[str, int] = {}
    self._class_names_seen = None
    self._progress = ProgressFile(self._progress_dir) if self._progress_dir else None
    self._total_reported = False
    if self._progress_dir:  # a local run, whose launcher waits for this process to exit
      process_exit.skip_final_collections()

  def start_bundle(self):
    self._total_reported = False  # the gauge, once per bundle: its value is the bundle's

  def finish_bundle(self):
    if self._progress:
      self._progress.flush()

  def _class_id(self, label: str, class_names: List[str]) -> int:
    if class_names is not self._class_names_seen:
      self._class_ids = {name: i for i, name in enumerate(class_names)}
      self._class_names_seen = class_names
    return self._class_ids[label]

  def _fail(self, image: LabeledImage, stage: str, reason: str):
    self._failed[stage].inc()
    if self._progress:
      self._progress.update(failed=1)
    return beam.pvalue.TaggedOutput(
        FAILURES_TAG, Failure(image.path, image.relpath, stage, reason))

  def process(self, image: LabeledImage, class_names: List[str], total: int = 0) -> Iterable:
    if not self._total_reported:
      self._to_convert.set(total)
      self._total_reported = True
      if self._progress:
        self._progress.update(total=total)
    try:  # a transient error is retried, then fails the run (ReadFailed): never a bad image
      data = reads.read_bytes(image.path)
    except reads.UnreadableFile as error:  # gone since the listing, denied, a folder
      yield self._fail(image, STAGE_READ, f'cannot read: {error}')
      return
    self._read.inc()
    self._bytes_read.inc(len(data))
    try:
      if image.mask is None:  # the stored pixels are measured below, not decoded again
        converted, mask, mask_classes = codec.convert_keeping_pixels(data, self._spec), None, None
        encoded = converted.encoded
      else:  # segmentation: the mask gets its image's crop and size (transforms.image.masks)
        converted = None
        encoded, mask, mask_classes = masks.convert_with_mask(
            data, image.mask, self._spec, num_classes=len(class_names))
    except masks.MaskError as error:
      yield self._fail(image, STAGE_MASK, str(error))
      return
    except codec.ImageError as error:
      yield self._fail(image, STAGE_DECODE, str(error))
      return
    except Exception as error:  # a decoder bug must not stop the run: report it with its type
      yield self._fail(image, STAGE_DECODE, f'decoder error: {type(error).__name__}: {error}')
      return
    sums = None
    if image.split == self._stats_split:  # --stats: the pixels as the reader will decode them
      try:
        sums = pixel_sums(stored_pixels(encoded, self._spec.channels,
                                        original=self._spec.image_format == 'original'))
      except Exception as error:  # an original file that TensorFlow's decoder refuses
        yield self._fail(image, STAGE_DECODE,
                         f'TensorFlow cannot decode it: {type(error).__name__}: {error}')
        return
    # perceptual hash and quality measures of the pixels just encoded (near duplicates, quality)
    measures = None
    if self._measure and converted is not None and converted.pixels is not None:
      measures = tuple(image_measures.measure(converted.pixels, converted.source_size))
    # hashed already when a dedup step ran before (transforms.analysis.dedup), else here
    source_sha256 = image.source_sha256 or hashlib.sha256(data).hexdigest()
    class_id = None if image.label is None else self._class_id(image.label, class_names)
    serialized = build_example(encoded, image.relpath, source_sha256, image.label, class_id,
                               mask=mask)
    self._converted.inc()
    self._bytes_out.inc(len(serialized))
    if self._progress:
      self._progress.update(done=1)
    yield ConvertedExample(image.split, image.label, image.relpath, serialized,
                           hashlib.sha256(serialized).digest(), source_sha256, sums,
                           image.version, measures, mask_classes)


class ConvertImages(beam.PTransform):
  """PCollection[LabeledImage] -> PCollection[ConvertedExample], and ``failures``.

  ``class_names``: a one-element PCollection holding the sorted class names (see
  ``transforms.inputs.labels.ClassNames``), used as a side input to number the classes.
  ``stats_split``: the split whose examples carry ``pixel_sums`` (``--stats``), or None.
  ``measure``: examples carry ``measures`` (``--image_checks``).
  ``total``: a one-element PCollection, the number of images the job converts (counted
  before the shuffle, so that it is known before the first image is converted), or None.
  ``progress_dir``: a local folder for the progress files (``transforms.image.progress``) on the
  local runner, or None.
  """

  def __init__(self, spec: codec.ImageSpec, class_names, stats_split: Optional[str] = None,
               measure: bool = True, total=None, progress_dir: Optional[str] = None):
    super().__init__()
    self._spec = spec
    self._class_names = class_names
    self._stats_split = stats_split
    self._measure = measure
    self._total = total
    self._progress_dir = progress_dir

  def expand(self, images):
    sides = {'class_names': beam.pvalue.AsSingleton(self._class_names, default_value=[])}
    if self._total is not None:
      sides['total'] = beam.pvalue.AsSingleton(self._total, default_value=0)
    return images | 'decode, resize, encode' >> beam.ParDo(
        _ConvertImageFn(self._spec, self._stats_split, self._measure, self._progress_dir),
        **sides,
    ).with_outputs(FAILURES_TAG, main='examples')
