"""Frames and message constants of kiln's worker protocol, version 1.

This module follows ``sdk/worker/PROTOCOL.md`` section 2: a frame is a 4-byte
big-endian length followed by exactly two msgpack values, a header map
(``id``, ``type``) and a body map (or nil). ``read_frame`` checks everything
the specification calls malformed and raises :class:`MalformedFrame`;
``encode_frame`` builds one frame as bytes so that callers can write it with a
single ``sendall`` under a lock.
"""

import struct

import msgpack

PROTOCOL_VERSION = 1
# The minor version this SDK speaks (PROTOCOL.md section 8): 1.3 takes a
# run's graph as the client's JSON bytes (``workflow_json``).
PROTOCOL_MINOR = 3
# Capabilities the server itself provides to every handler.
CAPABILITY_WORKFLOW_JSON = "workflow_json"
MAX_FRAME_BYTES = 16 << 20
MAX_DEPTH = 64

# Message types.
HELLO = "hello"
PING = "ping"
LOAD = "load"
UNLOAD = "unload"
RUN = "run"
CANCEL = "cancel"
STATS = "stats"
OK = "ok"
ERROR = "error"
PROGRESS = "progress"
RESULT = "result"

# Error codes.
BAD_REQUEST = "bad_request"
UNSUPPORTED = "unsupported"
NOT_LOADED = "not_loaded"
OUT_OF_MEMORY = "out_of_memory"
CANCELLED = "cancelled"
FAILED = "failed"
INTERNAL = "internal"


class MalformedFrame(ValueError):
    """A frame broke section 2 of the protocol: the peer is broken."""


class WorkerError(Exception):
    """An error answered with an ``error`` frame carrying ``code``."""

    def __init__(self, code, message):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message


class Cancelled(WorkerError):
    """A run stopped because the kernel cancelled it."""

    def __init__(self, message="run cancelled"):
        super().__init__(CANCELLED, message)


def encode_frame(id_, type_, body):
    """Return one whole frame (length prefix included) as bytes.

    ``body`` is a dict or None. Raises :class:`MalformedFrame` when the
    result would exceed ``MAX_FRAME_BYTES``.
    """
    payload = msgpack.packb({"id": id_, "type": type_}, use_bin_type=True)
    payload += msgpack.packb(body, use_bin_type=True)
    if len(payload) > MAX_FRAME_BYTES:
        raise MalformedFrame("frame of %d bytes exceeds %d" % (len(payload), MAX_FRAME_BYTES))
    return struct.pack(">I", len(payload)) + payload


def _check_value(value):
    """Check nesting depth and that every map key is a str, iteratively."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            if depth > MAX_DEPTH:
                raise MalformedFrame("nesting deeper than %d" % MAX_DEPTH)
            for k, item in v.items():
                if not isinstance(k, str):
                    raise MalformedFrame("map key %r is not a string" % (k,))
                if isinstance(item, (dict, list)):
                    stack.append((item, depth + 1))
        elif isinstance(v, list):
            if depth > MAX_DEPTH:
                raise MalformedFrame("nesting deeper than %d" % MAX_DEPTH)
            for item in v:
                if isinstance(item, (dict, list)):
                    stack.append((item, depth + 1))


def decode_payload(payload):
    """Decode a frame's payload (without length prefix).

    Returns ``(id, type, body)`` where body is a dict (nil becomes ``{}``).
    Raises :class:`MalformedFrame` for anything section 2 calls malformed.
    """
    up = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=MAX_FRAME_BYTES + 8)
    up.feed(payload)
    try:
        header = up.unpack()
        body = up.unpack()
    except msgpack.OutOfData:
        raise MalformedFrame("truncated frame") from None
    except Exception as exc:  # FormatError, StackError, reserved 0xc1, ...
        raise MalformedFrame("bad msgpack: %s" % exc) from None
    if up.tell() != len(payload):
        raise MalformedFrame("%d trailing bytes after the body" % (len(payload) - up.tell()))
    if not isinstance(header, dict):
        raise MalformedFrame("header is %s, not a map" % type(header).__name__)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise MalformedFrame("body is %s, not a map or nil" % type(body).__name__)
    _check_value(header)
    _check_value(body)
    id_ = header.get("id")
    type_ = header.get("type")
    if isinstance(id_, bool) or not isinstance(id_, int) or id_ < 0 or id_ >= 1 << 64:
        raise MalformedFrame("header id %r is not an unsigned integer" % (id_,))
    if not isinstance(type_, str) or not type_:
        raise MalformedFrame("header type %r is not a non-empty string" % (type_,))
    return id_, type_, body


def _read_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = sock.recv(min(n - len(buf), 1 << 20))
        except ConnectionResetError:
            # The kernel closed its end while a reply of ours was still
            # unread, so the close arrived as a reset: it is still the
            # kernel going away, not a broken stream.
            chunk = b""
        if not chunk:
            if buf:
                raise MalformedFrame("stream ended inside a frame")
            raise EOFError
        buf += chunk
    return bytes(buf)


def read_frame(sock):
    """Read one frame from a socket; return ``(id, type, body)``.

    Raises EOFError at a clean end of stream (between frames) and
    :class:`MalformedFrame` for a broken one.
    """
    (n,) = struct.unpack(">I", _read_exact(sock, 4))
    if not 0 < n <= MAX_FRAME_BYTES:
        raise MalformedFrame("bad frame length %d" % n)
    try:
        payload = _read_exact(sock, n)
    except EOFError:
        raise MalformedFrame("stream ended inside a frame") from None
    return decode_payload(payload)


# Field accessors for request bodies: a missing key is the zero value, a key
# of the wrong type is a bad request (as Go's decoder refuses it).

def get_uint(body, key):
    """Return body[key] as an unsigned int (0 when missing)."""
    v = body.get(key, 0)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise WorkerError(BAD_REQUEST, "%s: want an unsigned integer, got %r" % (key, v))
    return v


def get_int(body, key):
    """Return body[key] as an int (0 when missing)."""
    v = body.get(key, 0)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int):
        raise WorkerError(BAD_REQUEST, "%s: want an integer, got %r" % (key, v))
    return v


def get_float(body, key):
    """Return body[key] as a float (0.0 when missing)."""
    v = body.get(key, 0.0)
    if v is None:
        return 0.0
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise WorkerError(BAD_REQUEST, "%s: want a number, got %r" % (key, v))
    return float(v)


def get_str(body, key):
    """Return body[key] as a str ("" when missing)."""
    v = body.get(key, "")
    if v is None:
        return ""
    if not isinstance(v, str):
        raise WorkerError(BAD_REQUEST, "%s: want a string, got %r" % (key, v))
    return v


def get_map(body, key):
    """Return body[key] as a dict ({} when missing)."""
    v = body.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise WorkerError(BAD_REQUEST, "%s: want a map, got %s" % (key, type(v).__name__))
    return v


def get_list(body, key):
    """Return body[key] as a list ([] when missing)."""
    v = body.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise WorkerError(BAD_REQUEST, "%s: want an array, got %s" % (key, type(v).__name__))
    return v
