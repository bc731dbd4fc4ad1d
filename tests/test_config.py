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
