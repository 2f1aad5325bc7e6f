"""imagerecords: read the sharded TFRecord image datasets written by the imagerecords Beam job.

    import imagerecords

    train = imagerecords.load('gs://bucket/flowers', 'train', batch_size=256, training=True)
    val = imagerecords.load('gs://bucket/flowers', 'validation', batch_size=256)
    names = imagerecords.class_names('gs://bucket/flowers')       # label id -> class name
    n = imagerecords.num_examples('gs://bucket/flowers', 'train')
    data_dir = imagerecords.latest_run('gs://bucket/nightly')     # root/dt=... named by LATEST
    weights = imagerecords.class_weights('gs://bucket/flowers')   # {class id: weight}
    layer = imagerecords.preprocessing_layer('gs://bucket/flowers')  # JPEG bytes -> model input
    features = imagerecords.load_embeddings('gs://bucket/flowers', 'train', batch_size=256)

``imagerecords.contract`` (feature keys, file names, manifest keys) imports nothing heavy; the
rest needs TensorFlow and is imported on first use (PEP 562), so the Beam job can import the
contract without loading TensorFlow.

``python -m imagerecords.inspect OUT`` checks an output directory record by record (checksums,
decoding, counts, labels) and draws contact sheets and a class-count chart of it.
"""

import importlib
from typing import TYPE_CHECKING

__version__ = '0.1.0'

__all__ = ['load', 'load_embeddings', 'class_names', 'split_names', 'num_examples', 'latest_run',
           'IncompleteDatasetError', 'ShardMismatchError',
           '__version__',
           'preprocessing_layer', 'class_weights', 'MissingTransformError']

# Public name -> module that defines it; these modules import TensorFlow.
_LAZY = {
    'load': 'imagerecords.dataset',
    'load_embeddings': 'imagerecords.dataset',
    'class_names': 'imagerecords.metadata',
    'split_names': 'imagerecords.metadata',
    'num_examples': 'imagerecords.metadata',
    'latest_run': 'imagerecords.metadata',
    'IncompleteDatasetError': 'imagerecords.metadata',
    'ShardMismatchError': 'imagerecords.metadata',
    'preprocessing_layer': 'imagerecords.transform',
    'class_weights': 'imagerecords.transform',
    'MissingTransformError': 'imagerecords.transform',
}

if TYPE_CHECKING:  # for type checkers and IDEs; never executed
  from imagerecords.dataset import load, load_embeddings
  from imagerecords.metadata import (IncompleteDatasetError, ShardMismatchError, class_names,
                                     latest_run, num_examples, split_names)
  from imagerecords.transform import MissingTransformError, class_weights, preprocessing_layer


def __getattr__(name):
  if name in _LAZY:
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(__all__)
