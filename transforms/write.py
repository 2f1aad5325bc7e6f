"""Write each split's examples as a fixed number of TFRecord shards with ``WriteToTFRecord``.

    PCollection[ConvertedExample]
      | partition by split ----> train: serialized bytes -> WriteToTFRecord(OUT/train, 8 shards)
                           ----> validation: ...         -> WriteToTFRecord(OUT/validation, 2)
      -> PCollection[str]: the paths of every shard written

File names follow the contract: ``<split>-SSSSS-of-NNNNN.tfrecord[.gz]``. A fixed shard count
makes the file set the same on every runner and every night, whatever the data's size.
"""

from typing import Dict

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import WriteToTFRecord
from imagerecords import contract


class WriteSplits(beam.PTransform):
  """PCollection[ConvertedExample] -> PCollection[str] of written shard paths.

  Args:
    output_dir: the directory the shards go to.
    num_shards: split name -> number of shards (every split the data can have).
    compressed: GZIP-compress the shards (``.tfrecord.gz``).
  """

  def __init__(self, output_dir: str, num_shards: Dict[str, int], compressed: bool = False):
    super().__init__()
    self._output_dir = output_dir
    self._num_shards = dict(num_shards)
    self._compressed = compressed

  def expand(self, examples):
    splits = sorted(self._num_shards)
    index = {split: i for i, split in enumerate(splits)}
    by_split = examples | 'partition by split' >> beam.Partition(
        lambda example, _: index[example.split], len(splits))
    suffix = contract.SHARD_SUFFIX + (contract.GZIP_SUFFIX if self._compressed else '')
    compression = CompressionTypes.GZIP if self._compressed else CompressionTypes.UNCOMPRESSED
    written = []
    for split, pcoll in zip(splits, by_split):
      written.append(
          pcoll
          | f'{split}: records' >> beam.Map(lambda example: example.serialized)
          | f'{split}: write {self._num_shards[split]} shards' >> WriteToTFRecord(
              FileSystems.join(self._output_dir, split),
              file_name_suffix=suffix,
              num_shards=self._num_shards[split],
              shard_name_template=contract.SHARD_NAME_TEMPLATE,
              compression_type=compression))
    return written | 'all shard paths' >> beam.Flatten()
