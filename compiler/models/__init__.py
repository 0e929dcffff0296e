"""Loaders for the real pretrained models masec compiles in examples, tests and benchmarks."""
