"""reactor.config."""
