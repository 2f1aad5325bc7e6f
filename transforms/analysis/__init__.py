"""What the job learns about the dataset as a whole: counts and fingerprints per split, pixel
statistics (Beam combiners; tensorflow-transform with ``--stats=tft``), exact and near duplicates,
quality flags.

Element types in: ``ConvertedExample`` (without its record bytes where it can).
"""
