"""Data: corpus fetch and verification, vocabularies, batching."""
