"""Load tests, benchmarks and the baselines they compare against."""
