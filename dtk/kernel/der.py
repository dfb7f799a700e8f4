"""Just enough DER to read and write the PKCS#7 blobs appended to kernel modules.

`cryptography` can sign PKCS#7, but its DER differs from OpenSSL's CMS output
(it writes NULL parameters in the digest AlgorithmIdentifier; OpenSSL omits
them for SHA-2), so signatures that must be byte-identical to the kernel's
`sign-file` are assembled here. Reading is a strict definite-length parser:
module signatures are DER, and anything else is reported as corrupt.
"""

from __future__ import annotations

from dataclasses import dataclass

SEQUENCE = 0x30
SET = 0x31
INTEGER = 0x02
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06


class DerError(ValueError):
    """The bytes are not the DER structure expected."""


@dataclass(frozen=True)
class Tlv:
    tag: int
    value: bytes
    raw: bytes  # the whole encoding, tag and length included

    def children(self) -> list[Tlv]:
        if not self.tag & 0x20:
            raise DerError(f"tag 0x{self.tag:02x} is not constructed")
        return parse_all(self.value)


def parse_one(data: bytes, pos: int = 0) -> tuple[Tlv, int]:
    """One TLV at `pos`; returns it and the position after it."""
    if pos + 2 > len(data):
        raise DerError("truncated DER header")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise DerError("multi-byte DER tags are not used in module signatures")
    first = data[pos + 1]
    head = 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise DerError("indefinite length is BER, not DER")
    else:
        count = first & 0x7F
        if count > 4 or pos + 2 + count > len(data):
            raise DerError("bad DER length")
        length = int.from_bytes(data[pos + 2: pos + 2 + count], "big")
        head += count
    end = pos + head + length
    if end > len(data):
        raise DerError("DER value runs past the end of the data")
    return Tlv(tag, data[pos + head: end], data[pos:end]), end


def parse_all(data: bytes) -> list[Tlv]:
    items = []
    pos = 0
    while pos < len(data):
        item, pos = parse_one(data, pos)
        items.append(item)
    return items


def parse_exact(data: bytes) -> Tlv:
    item, end = parse_one(data)
    if end != len(data):
        raise DerError(f"{len(data) - end} trailing bytes after the DER structure")
    return item


def expect(tlv: Tlv, tag: int, what: str) -> Tlv:
    if tlv.tag != tag:
        raise DerError(f"{what}: expected tag 0x{tag:02x}, found 0x{tlv.tag:02x}")
    return tlv


def decode_oid(value: bytes) -> str:
    if not value:
        raise DerError("empty OID")
    parts = [value[0] // 40, value[0] % 40] if value[0] < 80 else [2, value[0] - 80]
    acc = 0
    for byte in value[1:]:
        acc = (acc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(acc)
            acc = 0
    return ".".join(str(p) for p in parts)


def decode_int(value: bytes) -> int:
    return int.from_bytes(value, "big", signed=True)


# --- writing -----------------------------------------------------------------

def encode(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        length = bytes([n])
    else:
        body = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(body)]) + body
    return bytes([tag]) + length + value


def seq(*items: bytes) -> bytes:
    return encode(SEQUENCE, b"".join(items))


def set_of(*items: bytes) -> bytes:
    # DER sorts SET OF members by encoding; every set written here has one member.
    return encode(SET, b"".join(sorted(items)))


def integer(n: int) -> bytes:
    length = max(1, (n.bit_length() + 8) // 8)
    return encode(INTEGER, n.to_bytes(length, "big", signed=True))


def oid(dotted: str) -> bytes:
    nums = [int(p) for p in dotted.split(".")]
    body = bytearray([40 * nums[0] + nums[1]])
    for arc in nums[2:]:
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        body.extend(reversed(chunk))
    return encode(OID, bytes(body))


def octets(data: bytes) -> bytes:
    return encode(OCTET_STRING, data)


def null() -> bytes:
    return encode(NULL, b"")


def explicit(number: int, inner: bytes) -> bytes:
    return encode(0xA0 | number, inner)
