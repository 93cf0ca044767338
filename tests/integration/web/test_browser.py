"""The page in real headless Chromium (Debian's ``chromium``, driven by Playwright's Python package).

Screenshots go to a folder this module prints, with copies under /tmp/imagerec-screens/.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect, sync_playwright

from ann_support import SAMPLE_DIR
from web_support import FOLDERS, PER_FOLDER, Server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
LEOPARD = SAMPLE_DIR / "Leopards" / "image_0002.jpg"
COPIES = Path("/tmp/imagerec-screens")


@pytest.fixture(scope="module")
def screens(tmp_path_factory):
    folder = tmp_path_factory.mktemp("screens")
    print(f"\nscreenshots: {folder} (copies in {COPIES})")
    yield folder
    COPIES.mkdir(exist_ok=True)
    for shot in folder.glob("*.png"):
        shutil.copy(shot, COPIES / shot.name)


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "chromium is missing: .ci/run installs it (apt-get install -y chromium)"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("request", lambda req: req.url.startswith("http://127.0.0.1") or page.errors.append(f"external: {req.url}"))
    yield page
    assert page.errors == []
    context.close()


def params(page) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


def order(page) -> list[str]:
    return page.locator("#grid .card").evaluate_all("cards => cards.map(c => c.dataset.id)")


def test_browse_similar_sliders_and_history(server, page, screens):
    page.goto(server.url)
    expect(page.locator("#grid .card")).to_have_count(len(FOLDERS) * PER_FOLDER)
    expect(page.locator("#counts")).to_contain_text(f"{len(FOLDERS) * PER_FOLDER} images")
    page.wait_for_function("[...document.querySelectorAll('#grid img')].slice(0, 12).every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=screens / "01-browse.png")

    page.locator("#grid .card").nth(12).click()
    first_id = params(page)["id"]
    assert params(page)["view"] == "similar"
    expect(page.locator("#grid .card .score")).to_have_count(10)
    expect(page.locator("#query-info")).to_contain_text("similar to")
    page.wait_for_function("[...document.querySelectorAll('#grid img')].every(i => i.complete)")
    page.screenshot(path=screens / "02-similar.png")

    before = order(page)
    page.locator("#grid img").evaluate_all("imgs => imgs.forEach(i => i.dataset.kept = '1')")
    thumbs = []
    page.on("request", lambda req: "/thumbnail" in req.url and thumbs.append(req.url))
    page.locator("#w-embedding").fill("0")
    page.locator("#w-dhash").fill("0")
    page.locator("#w-color").fill("1")
    page.wait_for_function("p => new URLSearchParams(location.search).get('wc') === '1' && "
                           "[...document.querySelectorAll('#grid .card')].map(c => c.dataset.id).join() !== p", arg=",".join(before))
    page.wait_for_load_state("networkidle")
    after = order(page)
    assert after != before and params(page)["we"] == "0" and params(page)["id"] == first_id
    kept = page.locator("#grid .card").evaluate_all("cards => cards.filter(c => c.querySelector('img').dataset.kept).map(c => c.dataset.id)")
    assert set(kept) == set(after) & set(before)  # cards still shown kept their <img> ...
    assert not [u for u in thumbs if any(f"/images/{i}/thumbnail" in u for i in kept)]  # ... and were not refetched
    page.screenshot(path=screens / "03-similar-colour-weight.png")

    page.select_option("#k", "5")
    expect(page.locator("#grid .card")).to_have_count(5)
    assert order(page) == after[:5]

    page.locator("#grid .card").nth(2).click()  # explore from a result
    second_id = params(page)["id"]
    assert second_id == after[2] and second_id != first_id
    expect(page.locator("#grid .card")).to_have_count(5)
    page.go_back()
    page.wait_for_function("id => new URLSearchParams(location.search).get('id') === id", arg=first_id)
    expect(page.locator("#query-info")).to_contain_text(f"id {first_id}")
    page.go_forward()
    expect(page.locator("#query-info")).to_contain_text(f"id {second_id}")


def test_keyboard(server, page, screens):
    page.goto(server.url)
    expect(page.locator("#grid .card")).to_have_count(len(FOLDERS) * PER_FOLDER)
    columns = page.evaluate("(() => { const c = [...document.querySelectorAll('#grid .card')];"
                            " return c.filter(x => x.offsetTop === c[0].offsetTop).length; })()")
    assert columns > 1
    page.keyboard.press("ArrowRight")  # selects the first card
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowLeft")
    selected = page.locator("#grid .card.selected")
    expect(selected).to_have_count(1)
    index = page.locator("#grid .card").evaluate_all("cards => cards.findIndex(c => c.classList.contains('selected'))")
    assert index == 1 + columns
    chosen = selected.get_attribute("data-id")
    page.screenshot(path=screens / "04-keyboard-selection.png")
    page.select_option("#k", "5")  # chosen on the browse page: carried into the search
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("Enter")
    page.wait_for_function("id => new URLSearchParams(location.search).get('id') === id", arg=chosen)
    expect(page.locator("#grid .card .score")).to_have_count(5)
    page.keyboard.press("ArrowDown")
    expect(page.locator("#grid .card.selected")).to_have_count(1)
    page.keyboard.press("Escape")
    page.wait_for_function("(new URLSearchParams(location.search).get('view') || 'browse') === 'browse'")
    expect(page.locator("#grid .card")).to_have_count(len(FOLDERS) * PER_FOLDER)


def test_upload_and_undecodable_upload(server, page, screens):
    page.goto(server.url)
    expect(page.locator("#grid .card")).to_have_count(len(FOLDERS) * PER_FOLDER)
    page.set_input_files("#upload", str(LEOPARD))
    page.wait_for_function("new URLSearchParams(location.search).get('view') === 'upload'")
    expect(page.locator("#grid .card .score")).to_have_count(10)
    expect(page.locator("#grid .card figcaption").first).to_have_text("Leopards/image_0002.jpg")
    expect(page.locator("#grid .card .dup").first).to_be_visible()
    expect(page.locator("#query-info")).to_contain_text("image_0002.jpg")
    page.wait_for_function("[...document.querySelectorAll('#grid img')].every(i => i.complete)")
    page.screenshot(path=screens / "05-upload-results.png")
    before = order(page)
    page.locator("#w-embedding").fill("0")
    page.locator("#w-color").fill("1")
    page.wait_for_function("p => [...document.querySelectorAll('#grid .card')].map(c => c.dataset.id).join() !== p",
                           arg=",".join(before))

    page.set_input_files("#upload", files=[{"name": "broken.jpg", "mimeType": "image/jpeg", "buffer": b"\xff\xd8 not a jpeg"}])
    message = page.locator("#message")
    expect(message).to_be_visible()
    expect(message).to_contain_text("broken.jpg: cannot use this query image")
    assert "Traceback" not in message.inner_text()
    page.screenshot(path=screens / "06-undecodable-upload.png")


def test_no_index_and_stale_states(fresh_collection, page, screens):
    from ann_support import run_cli

    collection = fresh_collection(3, build=False)
    running = Server(collection.config_path)
    try:
        page.goto(running.url)
        expect(page.locator("#banner")).to_contain_text("build-ann")
        expect(page.locator("#grid .card")).to_have_count(12)
        page.locator("#grid .card").first.click()
        expect(page.locator("#message")).to_contain_text("build-ann")
        page.screenshot(path=screens / "07-no-ann-index.png")
        assert run_cli(collection.config_path, "build-ann").returncode == 0
        shutil.copy(LEOPARD, collection.root / "Leopards" / "new.jpg")
        assert run_cli(collection.config_path, "index").returncode == 0
        page.reload()
        expect(page.locator("#banner")).to_contain_text("stale")
        expect(page.locator("#grid .card .score")).to_have_count(10)
        page.screenshot(path=screens / "08-stale-index-banner.png")
    finally:
        running.stop()


def test_empty_collection_page(tmp_path, tiny_model_file, page, screens):
    from ann_support import write_collection_config

    (tmp_path / "images").mkdir()
    running = Server(write_collection_config(tmp_path, tmp_path / "images", tiny_model_file).config_path)
    try:
        page.goto(running.url)
        expect(page.locator("#grid .empty")).to_contain_text("not indexed yet")
        expect(page.locator("#counts")).to_contain_text("0 images")
        page.screenshot(path=screens / "09-empty-collection.png")
    finally:
        running.stop()


def test_docs_page_renders_offline(server, page, screens):
    page.goto(server.url + "docs")
    expect(page.get_by_text("/api/images/{image_id}/similar").first).to_be_visible()
    page.screenshot(path=screens / "10-api-docs.png")
