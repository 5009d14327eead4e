"""Tests of the kiln Python SDK: run ``/usr/bin/python3 -m unittest`` in sdk/python."""
