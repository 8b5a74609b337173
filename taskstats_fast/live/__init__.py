"""Live surfaces that are sinks of interval accounting: the top view, the Prometheus exporter."""
