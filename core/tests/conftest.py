"""Core tests use the shared fixtures of `honing.testing.pytest_plugin` (loaded by the root pytest
configuration): per-test cache dir and settings isolation, loopback servers, `no_provider_keys`."""
