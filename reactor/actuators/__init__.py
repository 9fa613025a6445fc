"""reactor.actuators."""
