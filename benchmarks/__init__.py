"""Benchmarks of seqrl against peer libraries, each peer in its own process (and virtual env)."""
