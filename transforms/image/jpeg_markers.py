"""A JPEG's markers, walked by their segments' lengths without decoding anything (ITU-T T.81,
annex B): its scans counted, and whether it is a plain frame that every decoder reads.

The conversion (``transforms.image.codec``) asks these before it decodes: how many scans a
decode would take (``--max_jpeg_scans``), whether libjpeg-turbo's header parse alone gives the
shape of a file kept as it is (``--image_format=original``), and whether the fast path may
skip Pillow's parse.
"""

import re
from typing import Iterator, NamedTuple, Optional, Tuple

JPEG_SOI = b'\xff\xd8\xff'  # the start-of-image marker and the next marker's first byte

_PLAIN_JPEG_FRAMES = (0xC0, 0xC1, 0xC2)  # SOF0-2: baseline, extended, progressive (Huffman)


_SOS, _EOI = 0xDA, 0xD9  # start of scan, end of image
_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD8)])  # TEM, RST0-7: no length field

# The next marker in entropy-coded data or junk: 0xFF then a byte that is not a stuffed zero, a
# restart marker (RST0-7, which only a scan's data holds) or a fill 0xFF (ITU-T T.81 B.1.1.2-5).
_NEXT_MARKER = re.compile(rb'\xff[^\x00\xd0-\xd7\xff]')


def segments(data: bytes, min_bytes: int,
                   resync: bool = False) -> Iterator[Tuple[Optional[int], int]]:
  """(marker, position) of each marker of a JPEG after SOI, walked by the segments' lengths
  (nothing is decoded; fill bytes skipped) while ``min_bytes`` (at least 4: the marker and its
  length) remain from the marker.

  Without ``resync`` (a header's walk): (None, position) at a byte that is not a marker, and no
  more; the caller stops at the marker it looks for, at the latest the first scan (0xDA), past
  which the walk would read entropy-coded data as markers.

  With ``resync`` (the whole file's walk, as libjpeg reads it): each scan's entropy-coded data,
  and bytes that are not a marker (which libjpeg skips with a warning, 'extraneous bytes before
  marker'), are skipped to the next marker; the walk ends at EOI (0xD9), or at the end of the
  data. Segment payloads (EXIF thumbnails, ICC profiles) are stepped over by their lengths, so
  markers inside them are not seen.
  """
  position, size = 2, len(data)
  while position + min_bytes <= size:
    if data[position] != 0xFF or (resync and data[position + 1] == 0):
      if not resync:
        yield None, position
        return
      found = _NEXT_MARKER.search(data, position)
      if found is None:
        return
      position = found.start()
      continue
    marker = data[position + 1]
    if marker == 0xFF:  # a fill byte
      position += 1
      continue
    yield marker, position
    if resync and marker == _EOI:
      return
    if resync and marker in _STANDALONE_MARKERS:
      position += 2
      continue
    position += 2 + (data[position + 2] << 8 | data[position + 3])  # big-endian length
    if resync and marker == _SOS:  # the scan's header, then its entropy-coded data
      found = _NEXT_MARKER.search(data, position)
      if found is None:
        return
      position = found.start()


class JpegScans(NamedTuple):
  """What ``jpeg_scans`` finds in a JPEG's first image.

  scans: its SOS markers, each a pass of the decoder over the image's coefficients.
  progressive: its frame is progressive (SOF2, SOF6, SOF10, SOF14).
  """
  scans: int
  progressive: bool


_PROGRESSIVE_FRAMES = (0xC2, 0xC6, 0xCA, 0xCE)


def jpeg_scans(data: bytes) -> JpegScans:
  """Counts the scans of a JPEG's first image (up to its EOI) from its markers alone, walked
  as libjpeg reads them (``segments`` with ``resync``): nothing is decoded, and the
  entropy-coded data is only searched for its next marker.

  Each scan costs the decoder a pass over the whole image, so the count bounds a decode's work
  (``ImageSpec.max_jpeg_scans``). Returns ``JpegScans(0, False)`` for data that is not a JPEG.
  """
  if data[:3] != JPEG_SOI:
    return JpegScans(0, False)
  scans, progressive = 0, False
  for marker, _ in segments(data, 4, resync=True):
    if marker == _SOS:
      scans += 1
    elif marker in _PROGRESSIVE_FRAMES:
      progressive = True
  return JpegScans(scans, progressive)


def plain_jpeg_frame(data: bytes) -> bool:
  """True for a JPEG whose markers up to the frame header are well formed and whose frame is
  8-bit baseline, extended or progressive, which every ``tf.io.decode_jpeg`` decodes (the
  markers are walked by their lengths; nothing is decoded). Anything else (12-bit, lossless
  or arithmetic-coded frames, junk bytes between markers) goes the way of other formats:
  Pillow's stricter parse decides."""
  if data[:3] != JPEG_SOI:
    return False
  for marker, position in segments(data, 10):  # a frame header's fields: 10 bytes
    if marker is None:
      return False
    if marker in _PLAIN_JPEG_FRAMES:
      return data[position + 4] == 8  # the frame's sample precision, in bits
    if 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) or marker == 0xDA:
      return False  # another frame type, or the scan before any frame
  return False


def plain_upright_jpeg(data: bytes) -> Optional[Tuple[int, int]]:
  """(height, width) of a JPEG that Pillow opens as format ``JPEG`` in mode ``RGB`` or ``L``
  with EXIF orientation 1, told from its markers alone (walked by their lengths up to the first
  scan; nothing is decoded): one 8-bit baseline, extended or progressive frame of 1 or 3
  components, and no APP1 segment (EXIF and XMP, where an orientation is written) nor APP2
  ``MPF`` segment (a multi-picture file, which Pillow opens as ``MPO``). None for anything
  else, which then takes the general path (Pillow's parse first)."""
  if data[:3] != JPEG_SOI:
    return None
  shape = None
  for marker, position in segments(data, 4):
    if marker is None:
      return None
    if marker == 0xDA:  # the first scan: every header segment has been seen
      return shape
    if marker == 0xE1 or 0xD0 <= marker <= 0xD8 or marker == 0x01:
      return None  # EXIF/XMP, or a stand-alone marker before the scan: Pillow decides
    if marker == 0xE2 and data[position + 4:position + 8] == b'MPF\x00':
      return None
    if marker in _PLAIN_JPEG_FRAMES:
      if shape is not None or position + 10 > len(data):
        return None
      height = int.from_bytes(data[position + 5:position + 7], 'big')
      width = int.from_bytes(data[position + 7:position + 9], 'big')
      if data[position + 4] != 8 or data[position + 9] not in (1, 3) or not height or not width:
        return None
      shape = (height, width)
    elif 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
      return None  # another frame type
  return None
