"""The shortest path through the store: put, get, poll, on both transports."""

import numpy as np

import memstore


def test_put_get_round_trip(client):
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    client.put_tensor("smoke", data)
    np.testing.assert_array_equal(client.get_tensor("smoke"), data)


def test_missing_key_names_the_key(client):
    try:
        client.get_tensor("absent")
    except memstore.KeyNotFound as exc:
        assert "absent" in str(exc)
    else:
        raise AssertionError("get_tensor of a missing key must raise KeyNotFound")
