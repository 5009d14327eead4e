"""A minimal reader of safetensors headers (no third-party package).

A safetensors file is an 8-byte little-endian header length N, N bytes of
JSON (tensor name → dtype, shape, data_offsets; optional "__metadata__"),
then the tensor data. kiln's synthetic files record the family and the size
of the model they stand for in the metadata (``kiln.family``,
``kiln.nominal_bytes``).
"""

import json
import struct

MAX_HEADER_BYTES = 100 << 20

DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
               "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


class Tensor:
    """One entry of the tensor table; begin/end are absolute file offsets."""

    def __init__(self, name, dtype, shape, begin, end):
        self.name, self.dtype, self.shape, self.begin, self.end = name, dtype, shape, begin, end

    @property
    def nbytes(self):
        """The tensor's data size in bytes."""
        return self.end - self.begin


class Header:
    """A parsed header: ``tensors`` (in file order), ``metadata``, ``data_offset``."""

    def __init__(self, tensors, metadata, data_offset):
        self.tensors, self.metadata, self.data_offset = tensors, metadata, data_offset

    def nominal_bytes(self, file_size):
        """The size the file stands for (kiln.nominal_bytes), else file_size."""
        try:
            return int(self.metadata.get("kiln.nominal_bytes", file_size))
        except ValueError:
            return file_size

    def family(self):
        """The kiln.family metadata, "" when absent."""
        return self.metadata.get("kiln.family", "")


def read_header(buf):
    """Parse the header at the start of ``buf`` (bytes-like); raise ValueError."""
    if len(buf) < 8:
        raise ValueError("safetensors: file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", bytes(buf[:8]))
    if n == 0 or n > MAX_HEADER_BYTES or 8 + n > len(buf):
        raise ValueError("safetensors: header length %d out of range" % n)
    try:
        doc = json.loads(bytes(buf[8:8 + n]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError("safetensors: header: %s" % exc) from None
    if not isinstance(doc, dict):
        raise ValueError("safetensors: header is not an object")
    data_offset = 8 + n
    meta = doc.pop("__metadata__", None) or {}
    tensors = []
    for name, t in doc.items():
        try:
            b, e = t["data_offsets"]
            dtype, shape = t["dtype"], list(t["shape"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("safetensors: tensor %s: bad entry" % name) from None
        if not 0 <= b <= e or data_offset + e > len(buf):
            raise ValueError("safetensors: tensor %s: offsets out of range" % name)
        tensors.append(Tensor(name, dtype, shape, data_offset + b, data_offset + e))
    tensors.sort(key=lambda t: t.begin)
    return Header(tensors, meta, data_offset)


def write_file(path, tensors, metadata=None):
    """Write a safetensors file: ``tensors`` maps name → (dtype, shape, bytes)."""
    header, off, blobs = {}, 0, []
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
        blobs.append(data)
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)
