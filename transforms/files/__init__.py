"""Files on any filesystem Beam knows (local disk, gs://, s3://), for every stage: folders and
matching, reads that tell bad data (a per-image failure) from bad luck (retried), small text
files, and one sorted text file from many lines in bounded memory.
"""

from transforms import private_apis

# Beam's S3 filesystem builds a boto3 client per call (76 ms of CPU); every process that reads
# or writes a file imports this package first (transforms/private_apis.py)
private_apis.share_s3_clients()
