"""The per-image work: the conversion ParDo (read, decode, resize, encode), the codec, mask
pixels, the serialized record (``tf.train.Example``), per-image pixel sums and measures,
embeddings (RunInference), and progress counts.

Element types: ``LabeledImage`` in, ``ConvertedExample`` out (``transforms.elements``).
"""
