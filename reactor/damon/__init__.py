"""reactor.damon."""
