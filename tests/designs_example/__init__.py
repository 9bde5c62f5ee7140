"""Designs that live only in the tests (each one file, nothing in vmalab/ changed)."""
