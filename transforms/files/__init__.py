"""Files on any filesystem Beam knows (local disk, gs://, s3://), for every stage: folders and
matching, reads that tell bad data (a per-image failure) from bad luck (retried), small text
files, and one sorted text file from many lines in bounded memory.
"""
