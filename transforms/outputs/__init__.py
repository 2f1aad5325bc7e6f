"""What the job writes, and what it reuses of an earlier run: fixed-count shards, the image
index, labels, failures and the manifest, TFDS metadata, the run's claim on its output, the
publication of a dated run, and the previous night's records (incremental nights).

Every file operation goes through Beam's ``FileSystems`` (local disk, gs://, s3://).
"""
