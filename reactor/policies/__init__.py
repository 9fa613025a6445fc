"""reactor.policies."""
