"""Graph order, links, models and sampler parameters."""

import unittest

from kiln_worker import graph as g
from kiln_worker import protocol as p


class GraphTest(unittest.TestCase):
    def test_links(self):
        for v, want in [(["3", 0], True), (["3", 0.0], True), (["3", 1.5], False), ([True, 0], False),
                        ("3", False), (["3", 0, 1], False), ([3, 2], True)]:
            with self.subTest(v=v):
                self.assertEqual(g.is_link(v), want)

    def test_order_models_params(self):
        wf = {
            "10": {"class_type": "SaveImage", "inputs": {"images": ["8", 0.0]}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0]}},
            "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "latent_image": ["5", 0], "steps": 7.0}},
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base.safetensors"}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 768, "batch_size": 2}},
        }
        gr = g.Graph(wf)
        self.assertEqual([n.id for n in gr.order], ["4", "5", "3", "8", "10"])
        self.assertEqual(gr.models(), [("checkpoints/sd_xl_base.safetensors", "4", "sdxl")])
        self.assertEqual(gr.sampler_params(gr.nodes["3"]),
                         {"steps": 7, "width": 1024, "height": 768, "batch": 2, "family": "sdxl"})

    def test_bad_graphs(self):
        for name, wf in [("cycle", {"1": {"class_type": "A", "inputs": {"x": ["2", 0]}},
                                    "2": {"class_type": "B", "inputs": {"x": ["1", 0]}}}),
                         ("dangling", {"1": {"class_type": "A", "inputs": {"x": ["9", 0]}}}),
                         ("empty", {}),
                         ("no class", {"1": {"inputs": {}}})]:
            with self.subTest(name):
                with self.assertRaises(p.WorkerError):
                    g.Graph(wf)

    def test_output_names(self):
        counters = {}
        node = g.Node("9", "SaveImage", {"filename_prefix": "a/b"})
        self.assertEqual(g.output_name(node, counters, "job"), ("job/a", "b_00001_.png", "output"))
        self.assertEqual(g.output_name(node, counters, "job"), ("job/a", "b_00002_.png", "output"))
        with self.assertRaises(p.WorkerError):
            g.output_name(g.Node("9", "SaveImage", {"filename_prefix": "../x"}), {}, "job")


if __name__ == "__main__":
    unittest.main()
