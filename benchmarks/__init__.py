"""copyjob's benchmarks (``make bench``): not tests; they measure and report. See benchmarks/README.md."""
