"""Where the images come from and what they are: listing the input root, labels (folder,
file name, label file), splits, image-mask pairing.

Element types out: ``SourceFile``, ``LabeledImage`` (``transforms.elements``).
"""
