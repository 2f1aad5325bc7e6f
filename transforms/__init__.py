"""The PTransforms and DoFns of the imagerecords job, in one folder per stage of the data's way::

    elements.py   the element types that travel between steps (SourceFile, LabeledImage,
                  EncodedImage, ConvertedExample, Failure)
    batches.py    a bundle's elements batched per GroupByKey key before the shuffle, and lists
                  of elements for a combiner
    files/        folders, retried reads, text files, one sorted file from many lines: on any
                  filesystem Beam knows (local, gs://, s3://)
    inputs/       listing, labels (folder, file name, label file), splits, image-mask pairing
    image/        the conversion ParDo, the codec, mask pixels, the serialized record, per-image
                  sums, measures and embeddings, progress counts
    analysis/     counts and fingerprints, pixel statistics (Beam; tensorflow-transform),
                  exact and near duplicates, quality flags
    outputs/      fixed-count shards, the image index, labels, failures and manifest, TFDS
                  metadata, the claim on the output, publication, the previous night's records

``pipeline/run.py`` wires them. The folders follow the data's way (inputs, image, analysis,
outputs): each imports only from the ones before it, from files/, elements.py and batches.py.
"""
