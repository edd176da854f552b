"""Loopback fakes that speak real wire protocols, for tests, benchmarks and plugin authors."""
