"""Sizes given on the command line."""

import pytest

from memstore.config import parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("2GiB", 2 * 2**30),
        ("512M", 512 * 10**6),
        ("1e3", 1000),
        (" 64 kib ", 64 * 1024),
        (7, 7),
    ],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["-1", "-2GiB", "abc", "", "12 parsecs", "1.2.3G"])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_memstore_timeout_is_read_when_a_client_is_made(monkeypatch, single):
    """It was read once at import, so setting it later (or in a test) had no effect."""
    import memstore

    monkeypatch.setenv("MEMSTORE_TIMEOUT", "7.5")
    with memstore.Client(single.address) as client:
        assert client.timeout == 7.5
    monkeypatch.delenv("MEMSTORE_TIMEOUT")
    with memstore.Client(single.address) as client:
        assert client.timeout == 30.0


def test_a_bad_memstore_timeout_names_the_variable(monkeypatch):
    from memstore.config import client_timeout

    monkeypatch.setenv("MEMSTORE_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="MEMSTORE_TIMEOUT"):
        client_timeout()
