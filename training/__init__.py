"""Training loops, probes and the content-hashed cache of trained runs."""
