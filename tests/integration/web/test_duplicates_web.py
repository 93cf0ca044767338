"""The Duplicates page and its API on a real server over a collection with known duplicates, in real Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from ann_support import run_cli
from dupes_support import make_folder, write_config
from test_browser import browser, page, params, screens  # noqa: F401 - the real-browser fixtures
from web_support import Server


@pytest.fixture(scope="module")
def dupes_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("dupes_web")
    cfg = write_config(base, make_folder(base / "images"))
    for command in (["index", "-q"], ["build-ann"]):
        assert run_cli(cfg, *command, timeout=300).returncode == 0
    running = Server(cfg)
    yield running, cfg
    running.stop()


def test_api_answers_what_the_library_returns_without_absolute_paths(dupes_server):
    import imagerec

    server, cfg = dupes_server
    answer = server.client.get("/api/duplicates").json()
    with imagerec.open(cfg) as col:
        expected = col.duplicates().to_dict()
    assert [[m["id"] for m in g["members"]] for g in answer["groups"]] == [[m["id"] for m in g["members"]] for g in expected["groups"]]
    assert answer["n_groups"] >= 2 and all("path" not in m and "relpath" in m for g in answer["groups"] for m in g["members"])
    exact = server.client.get("/api/duplicates", params={"tier": "exact"}).json()
    assert exact["n_groups"] == 1 and exact["params"]["tier"] == "exact"
    assert server.client.get("/api/duplicates", params={"max_bits": 99}).status_code == 422
    assert server.client.get("/api/duplicates", params={"tier": "bogus"}).status_code == 422


def test_duplicates_page_shows_groups_with_keepers_and_thresholds_change_them(dupes_server, page, screens):  # noqa: F811
    server, _ = dupes_server
    expected = server.client.get("/api/duplicates").json()
    page.goto(server.url)
    page.locator("#pages a[data-view=duplicates]").click()
    expect(page.locator("#grid .dup-group")).to_have_count(expected["n_groups"])
    expect(page.locator("#dup-summary")).to_contain_text(f"{expected['n_groups']} groups")
    expect(page.locator("#grid .dup-group .card.keep")).to_have_count(expected["n_groups"])
    expect(page.locator("#controls")).to_be_hidden()
    page.wait_for_function("[...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=screens / "06-duplicates.png")

    page.locator("#dup-tier").select_option("exact")
    page.locator("#dup-controls button").click()
    expect(page.locator("#grid .dup-group")).to_have_count(1)
    assert params(page)["tier"] == "exact"
    page.go_back()
    expect(page.locator("#grid .dup-group")).to_have_count(expected["n_groups"])

    page.locator("#grid .dup-group .card").first.click()  # a member opens its similar images
    assert params(page)["view"] == "similar"
    expect(page.locator("#grid .card .score")).not_to_have_count(0)
