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


@pytest.mark.parametrize(
    ("variable", "reader", "text", "value"),
    [
        ("MEMSTORE_SHM_THRESHOLD", "shm_threshold", "1MiB", 1 << 20),
        ("MEMSTORE_SHM_POOL", "shm_pool_bytes", "0", 0),
        ("MEMSTORE_SHM_SPARE_TTL", "shm_spare_ttl", "0.5", 0.5),
        ("MEMSTORE_CLIENT_SOCKETS", "client_sockets", "3", 3),
        ("MEMSTORE_SAVE_TIMEOUT", "save_timeout", "60", 60.0),
        ("MEMSTORE_MPI_TIMEOUT", "mpi_timeout", "7", 7.0),
        ("MEMSTORE_MPI_GRACE", "mpi_abort_grace", "2", 2.0),
    ],
)
def test_settings_are_read_when_asked_and_bad_ones_name_their_variable(
    monkeypatch, variable, reader, text, value
):
    import memstore.config

    read = getattr(memstore.config, reader)
    monkeypatch.setenv(variable, text)  # after import: still obeyed
    assert read() == value
    monkeypatch.setenv(variable, "plenty")
    with pytest.raises(ValueError, match=variable):
        read()


def test_the_old_setting_constants_still_answer_with_a_deprecation_warning(monkeypatch):
    import memstore.config

    monkeypatch.setenv("MEMSTORE_SHM_THRESHOLD", "4096")
    with pytest.warns(DeprecationWarning, match="shm_threshold"):
        assert memstore.config.SHM_THRESHOLD == 4096
