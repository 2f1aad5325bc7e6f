"""imagerecords: read the sharded TFRecord image datasets written by the imagerecords Beam job.

    import imagerecords

    train = imagerecords.load('gs://bucket/flowers', 'train', batch_size=256, training=True)
    val = imagerecords.load('gs://bucket/flowers', 'validation', batch_size=256)
    names = imagerecords.class_names('gs://bucket/flowers')       # label id -> class name
    n = imagerecords.num_examples('gs://bucket/flowers', 'train')

``imagerecords.contract`` (feature keys, file names, manifest keys) imports nothing heavy; the
rest needs TensorFlow and is imported on first use (PEP 562), so the Beam job can import the
contract without loading TensorFlow.
"""

import importlib
from typing import TYPE_CHECKING

__version__ = '0.1.0'

__all__ = ['load', 'class_names', 'num_examples', 'IncompleteDatasetError', '__version__']

# Public name -> module that defines it; these modules import TensorFlow.
_LAZY = {
    'load': 'imagerecords.dataset',
    'class_names': 'imagerecords.metadata',
    'num_examples': 'imagerecords.metadata',
    'IncompleteDatasetError': 'imagerecords.metadata',
}

if TYPE_CHECKING:  # for type checkers and IDEs; never executed
  from imagerecords.dataset import load
  from imagerecords.metadata import IncompleteDatasetError, class_names, num_examples


def __getattr__(name):
  if name in _LAZY:
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(__all__)
