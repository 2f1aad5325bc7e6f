"""The metadata TensorFlow Datasets needs to read an output directory as an external dataset.

With these files beside the shards, ``tfds.builder_from_directory(OUT)`` reads the output as it
is, split slicing (``'train[:10%]'``) and ``as_supervised=True`` included::

    OUT/
      train-00000-of-00004.tfrecord ...   the shards, unchanged; TFDS finds them through the
                                          filepath template '{SPLIT}-{SHARD_X_OF_Y}.{FILEFORMAT}'
      dataset_info.json                   splits with their shard lengths (from the manifest's
                                          per-shard record counts) and bytes, file format, version,
                                          supervised keys (image/encoded, image/class/label)
      features.json                       one feature per record key, named as the record's keys
      image.class.label.labels.txt        the ClassLabel's names (= labels.txt)

The JSON is what ``tfds.folder_dataset.write_metadata`` writes for these features (the
``DatasetInfo`` and ``FeaturesDict`` protos in JSON form), built here as plain dicts: the job
does not import tensorflow_datasets, a large package with its own pins, in the launcher or the
workers, and the tests read the output with tensorflow_datasets itself to prove the files right.

Each record key is one top-level feature of that name (``image/encoded``, ``image/class/label``,
...), so ``as_dataset`` yields dicts keyed like the records: ``image/encoded`` decoded to uint8
``[H, W, C]``, ``image/class/label`` int64, a segmentation mask (``--masks``) decoded to uint8
``[H, W, 1]``, an embedding (``--embedding_model``) float32 of its manifest shape, the rest
as stored (raw pixels, ``--image_format=raw``, stay bytes); a
segmentation output has no class label feature. GZIP-compressed shards
(``--compression=gzip``) get no TFDS metadata: TFDS reads only uncompressed TFRecord files.
"""

import json
from typing import Dict, List, Optional

from imagerecords import contract
from imagerecords import manifest_schema

_SCALAR_INT64 = {
    'pythonClassName': 'tensorflow_datasets.core.features.scalar.Scalar',
    'tensor': {'shape': {}, 'dtype': 'int64', 'encoding': 'none'},
}
_TEXT = {'pythonClassName': 'tensorflow_datasets.core.features.text_feature.Text', 'text': {}}


def _image(channels: int, image_format: str) -> dict:
  """A ``tfds.features.Image`` of ``channels`` channels, any height and width (TFDS decodes
  any encoded format; ``encodingFormat`` names only the two it can write)."""
  image = {'shape': {'dimensions': ['-1', '-1', str(channels)]}, 'dtype': 'uint8'}
  if image_format in ('jpeg', 'png'):
    image['encodingFormat'] = image_format
  return {'pythonClassName': 'tensorflow_datasets.core.features.image_feature.Image',
          'image': image}


def _tensor(shape, dtype: str) -> dict:
  """A ``tfds.features.Tensor`` of a fixed ``shape`` (list of ints) and ``dtype``."""
  return {'pythonClassName': 'tensorflow_datasets.core.features.tensor_feature.Tensor',
          'tensor': {'shape': {'dimensions': [str(d) for d in shape]}, 'dtype': dtype,
                     'encoding': 'none'}}


def features(image_format: str, channels: int, num_classes: int, segmentation: bool = False,
             embedding: Optional[manifest_schema.EmbeddingSection] = None) -> dict:
  """``features.json``: a FeaturesDict of the record keys: class keys when ``num_classes``,
  mask keys with ``segmentation``, ``image/embedding`` (float32 of the manifest's embedding
  ``shape``, e.g. ``[1280]`` or ``[7, 7, 1280]``) and, stored whole, ``image/embedding/shape``
  (int64 ``[rank]``) with ``embedding`` (the manifest's section). Raw pixels
  (``--image_format=raw``) stay bytes, a ``Tensor`` of tf.string, to be reshaped with
  ``image/height``, ``image/width``, ``image/channels``."""
  feature_dict = {
      contract.IMAGE_ENCODED: (
          {'pythonClassName': 'tensorflow_datasets.core.features.tensor_feature.Tensor',
           'tensor': {'shape': {}, 'dtype': 'string', 'encoding': 'none'}}
          if image_format == contract.RAW_FORMAT else _image(channels, image_format)),
      contract.IMAGE_FORMAT: _TEXT,
      contract.IMAGE_HEIGHT: _SCALAR_INT64,
      contract.IMAGE_WIDTH: _SCALAR_INT64,
      contract.IMAGE_CHANNELS: _SCALAR_INT64,
      contract.FILENAME: _TEXT,
      contract.SOURCE_SHA256: _TEXT,
  }
  if num_classes:
    feature_dict[contract.CLASS_LABEL] = {
        'pythonClassName':
            'tensorflow_datasets.core.features.class_label_feature.ClassLabel',
        'classLabel': {'numClasses': str(num_classes)},
    }
    feature_dict[contract.CLASS_TEXT] = _TEXT
  if segmentation:
    feature_dict[contract.MASK_ENCODED] = _image(1, 'png')
    feature_dict[contract.MASK_FORMAT] = _TEXT
  if embedding:
    feature_dict[contract.EMBEDDING] = _tensor(embedding.shape, 'float32')
    if embedding.shape_feature:
      feature_dict[contract.EMBEDDING_SHAPE] = _tensor([len(embedding.shape)], 'int64')
  return {
      'pythonClassName': 'tensorflow_datasets.core.features.features_dict.FeaturesDict',
      'featuresDict': {'features': dict(sorted(feature_dict.items()))},
  }


def dataset_info(name: str, splits: Dict[str, manifest_schema.SplitEntry], labeled: bool,
                 description: str) -> dict:
  """``dataset_info.json`` for the manifest's ``splits`` section (shard lengths and bytes)."""
  info = {
      'name': name,
      'description': description,
      'version': '1.0.0',
      'fileFormat': 'tfrecord',
      'splits': [{
          'name': split,
          'filepathTemplate': contract.TFDS_FILEPATH_TEMPLATE,
          'shardLengths': [str(shard.num_examples) for shard in info.shards],
          'numBytes': str(info.bytes or 0),
      } for split, info in sorted(splits.items())],
  }
  if labeled:
    info['supervisedKeys'] = {'tuple': {'items': [
        {'featureKey': contract.IMAGE_ENCODED}, {'featureKey': contract.CLASS_LABEL}]}}
  return info


def metadata_files(manifest: manifest_schema.Manifest) -> Dict[str, str]:
  """File name -> text of every TFDS metadata file for ``manifest`` (its ``classes``,
  ``image``, ``splits``, ``task``, ``embedding``, ``input_dir``); {} for GZIP shards."""
  splits = manifest.splits
  if any(info.compressed for info in splits.values()):
    return {}
  class_names: List[str] = manifest.classes
  image = manifest.image
  segmentation = manifest.task == contract.TASK_SEGMENTATION
  labeled = bool(class_names) and not segmentation  # masks carry the classes, not a label
  description = (f'Images converted by imagerecords from {manifest.input_dir}: '
                 f'{len(class_names)} classes, splits {", ".join(sorted(splits))}.')
  files = {
      contract.TFDS_DATASET_INFO_FILE: dataset_info(
          'imagerecords', splits, labeled, description),
      contract.TFDS_FEATURES_FILE: features(
          image.format, image.channels, len(class_names) if labeled else 0,
          segmentation, manifest.embedding),
  }
  texts = {name: json.dumps(value, indent=2, ensure_ascii=False)
           for name, value in files.items()}
  if labeled:
    texts[contract.TFDS_CLASS_NAMES_FILE] = ''.join(f'{name}\n' for name in class_names)
  return texts
