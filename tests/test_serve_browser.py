"""The web page in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by Playwright.

Skipped, with the reason shown by ``pytest -ra``, when Playwright or Chromium is missing or Chromium
cannot start; ``.ci/run`` installs Chromium where apt is usable.
"""

from __future__ import annotations

import io
import os

import httpx
import numpy as np
import pytest
from PIL import Image

from pixelwise.serve import ServeConfig, create_app, serve_in_background

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        pytest.skip(f"playwright is not installed ({e}); pip install playwright")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not found; install Debian's chromium package (apt-get install chromium)")
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        except Exception as e:  # noqa: BLE001 - any launch failure means: no browser here
            pytest.skip(f"{CHROMIUM} did not start: {str(e).splitlines()[0][:200]}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def segmenter(trained_run):
    from pixelwise import load

    return load(trained_run, "cpu")


def _canvas_rgb(page) -> np.ndarray:
    data = page.evaluate("""() => {
        const c = document.getElementById('overlay');
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);
    }""")
    h, w = page.evaluate("() => [overlay.height, overlay.width]")
    return np.array(data, dtype=np.uint8).reshape(h, w, 4)[..., :3]


def test_page_upload_shows_overlay_legend_and_areas(browser, segmenter, tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (36, 48, 3), dtype=np.uint8)
    path = tmp_path / "street.png"
    Image.fromarray(image).save(path)
    mask = segmenter.predict(image)
    colors = np.array(segmenter.classes.colors, dtype=np.uint8)

    with serve_in_background(create_app(segmenter)) as url:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        page.wait_for_selector("body[data-state=ready]", timeout=20_000)
        legend = page.locator("#legend li")
        assert legend.count() == segmenter.num_classes
        assert legend.all_inner_texts() == [f"{i}: {n}" for i, n in enumerate(segmenter.classes.names)]
        assert page.locator("#result").is_hidden()

        page.set_input_files("#file", str(path))
        page.wait_for_selector("body[data-state=done]", timeout=30_000)
        assert page.locator("#overlay").is_visible() and page.locator("#legend").is_visible()
        assert "street.png: 48x36 pixels" in page.inner_text("#status")

        # The area table shows the same counts as the JSON API for the same image.
        api = httpx.post(url + "/predict", files={"file": ("street.png", path.read_bytes(), "image/png")}).json()
        shown = [int(t) for t in page.locator("#areas tbody td.pixels").all_inner_texts()]
        assert (
            shown == [c["pixels"] for c in api["classes"]] == np.bincount(mask.ravel(), minlength=len(colors)).tolist()
        )

        # Opacity 100%: the canvas is the colour mask; 0%: the image itself.
        page.fill("#opacity", "100")
        np.testing.assert_array_equal(_canvas_rgb(page), colors[mask])
        assert page.inner_text("#opacity-value") == "100%"
        page.fill("#opacity", "0")
        assert np.abs(_canvas_rgb(page).astype(int) - image.astype(int)).max() <= 2

        # The download link holds the mask PNG, named after the image.
        link = page.locator("#download")
        assert link.get_attribute("download") == "street_mask.png"
        with page.expect_download() as dl:
            link.click()
        got = np.asarray(Image.open(dl.value.path()))
        np.testing.assert_array_equal(got, mask)

        # A bad upload shows the server's message and the page keeps working.
        bad = tmp_path / "notes.png"
        bad.write_bytes(b"not an image at all")
        page.set_input_files("#file", str(bad))
        page.wait_for_selector("body[data-state=error]", timeout=20_000)
        assert "Error 400" in page.inner_text("#status") and "not an image" in page.inner_text("#status")
        page.set_input_files("#file", str(path))
        page.wait_for_selector("body[data-state=done]", timeout=30_000)
        assert errors == []
        page.close()


def test_page_asks_for_the_token(browser, segmenter, tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.full((20, 24, 3), 90, np.uint8)).save(path)
    with serve_in_background(create_app(segmenter, ServeConfig(token="s3cret"))) as url:
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_selector("#auth:not([hidden])", timeout=20_000)
        assert "token" in page.inner_text("#status")
        page.fill("#token", "s3cret")
        page.click("#use-token")
        page.locator("#legend li").first.wait_for(state="attached", timeout=20_000)
        page.set_input_files("#file", str(path))
        page.wait_for_selector("body[data-state=done]", timeout=30_000)
        assert page.locator("#areas tbody tr").count() == segmenter.num_classes
        page.close()


def test_page_screenshot_is_not_blank(browser, segmenter, tmp_path):
    """A quick look as a person would: after an upload the page shows more than a blank sheet."""
    path = tmp_path / "b.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    with serve_in_background(create_app(segmenter)) as url:
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        page.goto(url + "/")
        page.wait_for_selector("body[data-state=ready]", timeout=20_000)
        page.set_input_files("#file", str(path))
        page.wait_for_selector("body[data-state=done]", timeout=30_000)
        shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("L"))
        assert shot.std() > 10  # text, table and overlay drawn
        if os.environ.get("PIXELWISE_SCREENSHOT"):
            page.screenshot(path=os.environ["PIXELWISE_SCREENSHOT"], full_page=True)
        page.close()
