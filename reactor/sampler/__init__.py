"""reactor.sampler."""
