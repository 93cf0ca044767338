"""Small pieces of the web app: id parsing, thumbnail sizes, loopback detection, folder ranges on a real store."""

from __future__ import annotations

import pytest

from imagerec.cli.serve_command import is_loopback
from imagerec.web.catalog import NotFound, folders, page, parse_id
from imagerec.data.thumbnails import Thumbnails


@pytest.mark.parametrize("raw", ["", "-1", "+1", "1e3", "٣", "0x10", " 1", "9223372036854775808", "1" * 30])
def test_parse_id_refuses_anything_but_a_plain_id(raw):
    with pytest.raises(NotFound):
        parse_id(raw)


def test_parse_id_accepts_plain_ids():
    assert parse_id("0") == 0 and parse_id("9223372036854775807") == (1 << 63) - 1


def test_thumbnail_size_snaps_to_configured(tmp_path):
    thumbs = Thumbnails(tmp_path, ("JPEG",), 10**8, (256, 128, 512))
    assert [thumbs.size_for(s) for s in (None, 16, 128, 129, 512, 4000)] == [128, 128, 128, 256, 512, 512]


@pytest.mark.parametrize("host,expected", [("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.1.2.3", True),
                                           ("0.0.0.0", False), ("192.168.1.5", False), ("::", False), ("example.org", False)])
def test_is_loopback(host, expected):
    assert is_loopback(host) is expected


def test_folder_ranges_do_not_leak_into_sibling_folders(web_collection):
    from imagerec.store import Store

    with Store(web_collection.config().output.layout.db, readonly=True) as store:
        assert folders(store) == {"Leopards": 10, "Motorbikes": 10, "sunflower": 10, "watch": 10}
        total, rows = page(store, 0, 100, "Leopard")  # a prefix of a folder name is not that folder
        assert total == 0 and rows == []
        total, rows = page(store, 5, 3, "watch")
        assert total == 10 and [p for _, p in rows] == sorted(p for _, p in rows) and all(p.startswith("watch/") for _, p in rows)


def test_listening_socket_is_tcp_so_connections_get_nodelay():
    import socket

    from imagerec.cli.serve_command import bind

    sock = bind("127.0.0.1", 0)  # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP
    try:
        assert sock.proto == socket.IPPROTO_TCP and sock.getsockname()[1] > 0
    finally:
        sock.close()
