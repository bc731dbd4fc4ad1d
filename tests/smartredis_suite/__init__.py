"""SmartRedis v0.6.1 tests/python, vendored (see README.md).

A package, so its module names (test_client, ...) do not clash with memstore's own tests.
"""
