"""Helpers for tests: a kernel side of the protocol over a socketpair."""

import socket
import struct
import threading

import msgpack

from kiln_worker import protocol as p
from kiln_worker.server import Server


class FakeKernel:
    """Runs a handler on one end of a socketpair and talks to it."""

    def __init__(self, handler, hello_options=None, output_dir="/tmp", do_hello=True):
        self.sock, worker_end = socket.socketpair()
        self.sock.settimeout(20)
        self.server = Server(worker_end, handler, log=lambda m: None)
        self.exit_code = None

        def serve():
            self.exit_code = self.server.serve()
            worker_end.close()
        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        self.next_id = 1
        if do_hello:
            t, body = self.call("hello", {"protocol": 1, "worker_id": "w0", "output_dir": output_dir,
                                          "device": {"index": 0, "name": "cpu"},
                                          "options": hello_options or {}})
            assert t == "ok", body
            self.hello = body

    def send(self, type_, body, id_=None):
        """Send a request; return its id."""
        if id_ is None:
            id_ = self.next_id
            self.next_id += 1
        self.sock.sendall(p.encode_frame(id_, type_, body))
        return id_

    def send_raw(self, payload):
        """Send a frame with a raw payload."""
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)

    def read(self):
        """Read one frame: (id, type, body)."""
        return p.read_frame(self.sock)

    def call(self, type_, body):
        """Send a request and return (type, body) of its terminal frame."""
        id_ = self.send(type_, body)
        while True:
            rid, t, b = self.read()
            if rid == id_ and t != "progress":
                return t, b

    def close(self):
        """Close the kernel end and wait for the server to return."""
        self.sock.close()
        self.thread.join(10)


def packb(v):
    """msgpack-encode v."""
    return msgpack.packb(v, use_bin_type=True)
