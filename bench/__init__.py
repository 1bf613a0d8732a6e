"""errands benchmarks (not part of the library): see bench/README.md."""
