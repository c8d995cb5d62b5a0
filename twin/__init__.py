"""gpu-twin: a digital twin of GPU training clusters."""
