"""CRC32C helpers: the checksum GCS records for every object.

Parallel transfers checksum each part where it is read and combine the part
checksums afterwards (zlib's ``crc32_combine`` construction over GF(2)), so no
second pass over a gigabyte is needed to verify it.
"""

from __future__ import annotations

import base64

import crc32c

_POLY = 0x82F63B78  # CRC32C (Castagnoli), bit-reversed


def crc32c_of(data, value: int = 0) -> int:
    """CRC32C of ``data`` (any buffer, including memoryviews of maps), continuing from ``value``."""
    return crc32c.crc32c(data, value)


def to_b64(crc: int) -> str:
    """The base64 big-endian form GCS uses in object metadata."""
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


def combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC32C of ``a + b`` from ``crc1 = crc(a)``, ``crc2 = crc(b)`` and ``len2 = len(b)``."""
    if len2 == 0:
        return crc1
    # Operator matrices that append 1, 2, 4, … zero bits to a CRC, squared up
    # as len2's binary digits are consumed (one zero *byte* is 8 bits).
    odd = [_POLY] + [1 << n for n in range(31)]
    even = _square(odd)
    odd = _square(even)
    while True:
        even = _square(odd)
        if len2 & 1:
            crc1 = _times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _square(even)
        if len2 & 1:
            crc1 = _times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def _times(matrix: list[int], vector: int) -> int:
    total, row = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


def _square(matrix: list[int]) -> list[int]:
    return [_times(matrix, matrix[n]) for n in range(32)]
