"""Unit tests of the pure controllers and the plant models."""
