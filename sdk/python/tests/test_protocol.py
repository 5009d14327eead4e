"""Frame encoding and decoding against PROTOCOL.md section 2."""

import re
import os
import unittest

from kiln_worker import protocol as p
from .helpers import packb

PROTOCOL_MD = os.path.join(os.path.dirname(__file__), "..", "..", "worker", "PROTOCOL.md")


def doc_frames():
    """Return {label: bytes} for the hex dumps in PROTOCOL.md."""
    with open(PROTOCOL_MD) as f:
        text = f.read()
    out = {}
    for m in re.finditer(r"<!-- frame: (.*?) -->\n```\n(.*?)```", text, re.S):
        data = bytearray()
        for line in m.group(2).splitlines():
            data += bytes.fromhex(" ".join(line[10:58].split()))
        out[m.group(1)] = bytes(data)
    return out


class FrameTest(unittest.TestCase):
    def test_doc_frames(self):
        frames = doc_frames()
        self.assertEqual(frames["ping id=1 nonce=42"], p.encode_frame(1, "ping", {"nonce": 42}))
        self.assertEqual(frames["ok id=1 nonce=42"], p.encode_frame(1, "ok", {"nonce": 42}))
        self.assertEqual(p.decode_payload(frames["ping id=1 nonce=42"][4:]), (1, "ping", {"nonce": 42}))

    def test_key_order_and_nil_body(self):
        payload = packb({"type": "ping", "id": 7, "future": 1}) + packb(None)
        self.assertEqual(p.decode_payload(payload), (7, "ping", {}))

    def test_malformed(self):
        deep = {}
        cur = deep
        for _ in range(70):
            cur["a"] = {}
            cur = cur["a"]
        for name, payload in [
            ("trailing bytes", packb({"id": 1, "type": "ping"}) + packb({}) + b"\x00"),
            ("truncated", packb({"id": 1, "type": "ping"}) + packb({"nonce": 1})[:-1]),
            ("no body", packb({"id": 1, "type": "ping"})),
            ("missing id", packb({"type": "ping"}) + packb({})),
            ("empty type", packb({"id": 1, "type": ""}) + packb({})),
            ("header not a map", packb([1, "ping"]) + packb({})),
            ("body not a map", packb({"id": 1, "type": "ping"}) + packb([1])),
            ("reserved 0xc1", packb({"id": 1, "type": "ping"}) + b"\xc1"),
            ("negative id", packb({"id": -1, "type": "ping"}) + packb({})),
            ("int map key", packb({"id": 1, "type": "ping"}) + packb({1: 2})),
            ("too deep", packb({"id": 1, "type": "ping"}) + packb(deep)),
        ]:
            with self.subTest(name):
                with self.assertRaises(p.MalformedFrame):
                    p.decode_payload(payload)

    def test_field_types(self):
        self.assertEqual(p.get_uint({}, "nonce"), 0)
        with self.assertRaises(p.WorkerError) as cm:
            p.get_uint({"nonce": "x"}, "nonce")
        self.assertEqual(cm.exception.code, p.BAD_REQUEST)
        with self.assertRaises(p.WorkerError):
            p.get_map({"workflow": [1]}, "workflow")


if __name__ == "__main__":
    unittest.main()
