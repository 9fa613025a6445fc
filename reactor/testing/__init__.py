"""reactor.testing."""
