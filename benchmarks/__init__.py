"""The benchmarks of fastapi-bus against the plain drivers: ``python -m benchmarks --help``."""
