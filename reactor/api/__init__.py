"""reactor.api."""
