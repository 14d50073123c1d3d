"""A real browser (Debian's chromium, driven by playwright) against a live server with no internet:
/docs renders from the service's own assets, and the demo page completes its round trip.

These tests fail, not skip, when chromium or playwright is missing: ``make test`` installs both.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from service.images import ACCEPTED_FORMATS
from tests.conftest import FIXTURE_ROOT
from tests.service.conftest import LiveServer, serving

CHROMIUM = "/usr/bin/chromium"
# Offline and quiet: no sandbox (containers, root), no GPU, none of chromium's own calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 30_000

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: apt-get install -y chromium (make test does)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - reported as a failure with the fix
        pytest.fail("python playwright is missing: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with serving() as live:  # one for the module: the pages only read from it
        yield live


@pytest.fixture
def outside() -> list[str]:
    """URLs the page tried to reach beyond the server (all refused)."""
    return []


@pytest.fixture
def page(browser: Any, server: LiveServer, outside: list[str]) -> Iterator[Any]:
    """A page that may only reach the server: any other request is refused and recorded in ``outside``."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)

    def route(request_route: Any) -> None:
        url = request_route.request.url
        parsed = urlparse(url)
        if parsed.scheme in ("data", "blob") or (parsed.hostname == "127.0.0.1" and parsed.port == server.port):
            request_route.continue_()
        else:
            outside.append(url)
            request_route.abort()

    page.route("**/*", route)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors: {errors}"


def psnr_shown(page: Any, selector: str) -> float:
    match = re.search(r"[\d.]+", page.inner_text(selector))
    assert match, f"no figure in {selector}"
    return float(match.group())


def shown_image(page: Any, selector: str) -> np.ndarray:
    """The pixels of the PNG an <img> shows from a data: URL (what the page got from the service)."""
    source = page.eval_on_selector(selector, "img => img.src")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))))


def test_docs_render_with_the_services_own_assets(page: Any, server: LiveServer, outside: list[str]) -> None:
    page.goto(server.url + "/docs")
    page.wait_for_selector(".swagger-ui .opblock-summary-path", state="visible")
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert {"/denoise", "/corrupt", "/denoise/batch", "/models"} <= {p.strip() for p in paths}
    assert outside == []


def test_demo_page_round_trip(page: Any, server: LiveServer, outside: list[str]) -> None:
    page.goto(server.url + "/")
    model_select = page.locator("#model")
    page.wait_for_function("document.querySelectorAll('#model option').length > 1")
    assert model_select.input_value() == ""  # automatic: the service picks the model by the image
    model_select.select_option("mlp-gaussian")
    page.select_option("#noise", "gaussian")
    page.click("button.sample >> nth=0")
    page.wait_for_function("document.getElementById('denoised-psnr').textContent.includes('dB')")
    for image in ("#clean", "#noisy", "#denoised"):
        page.wait_for_function(f"document.querySelector('{image}').naturalWidth > 0")
    assert page.eval_on_selector("#denoised", "img => img.naturalWidth") == 28
    assert psnr_shown(page, "#denoised-psnr") > psnr_shown(page, "#noisy-psnr")
    assert "mlp-gaussian" in page.inner_text("#status")
    assert outside == []


def test_demo_page_shows_the_services_error(page: Any, server: LiveServer) -> None:
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelectorAll('#model option').length > 0")
    page.set_input_files("#upload", files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"not a png"}])
    page.wait_for_selector("#status.error")
    assert "400" in page.inner_text("#status") and "not an image" in page.inner_text("#status")


def test_the_pages_noise_choices_and_levels_are_the_services(page: Any, server: LiveServer) -> None:
    """The page lists GET /noises (built from models.corruptions), labels and default levels included."""
    from models.corruptions import NOISES

    page.goto(server.url + "/")
    page.wait_for_function("document.querySelectorAll('#noise option').length > 0")
    options = page.eval_on_selector_all("#noise option", "options => options.map(o => [o.value, o.textContent])")
    as_it_is = ["", "none: my image is already noisy"]  # the page's own last choice: add no noise
    assert options == [*([noise.name, noise.label] for noise in NOISES.values()), as_it_is]
    page.select_option("#noise", "salt_pepper")
    assert float(page.input_value("#level")) == NOISES["salt_pepper"].default_level


def test_demo_page_shows_a_photo_at_full_resolution_denoised_by_the_photo_model(page: Any, server: LiveServer) -> None:
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelectorAll('#noise option').length > 0")
    page.select_option("#noise", "gaussian")
    page.eval_on_selector("#level", "slider => { slider.value = '0.1'; }")  # σ ≈ 25/255, the photo model's range
    page.click("button.sample.photo >> nth=0")
    page.wait_for_function("document.getElementById('denoised-psnr').textContent.includes('dB')")
    for image in ("#clean", "#noisy", "#denoised"):
        page.wait_for_function(f"document.querySelector('{image}').naturalWidth === 256")
        assert page.eval_on_selector(image, "img => img.getBoundingClientRect().width") == 256  # not scaled
    assert psnr_shown(page, "#denoised-psnr") > psnr_shown(page, "#noisy-psnr")
    assert "photo-blind" in page.inner_text("#status") and "photo model" in page.inner_text("#status")


def test_demo_page_has_a_colour_photo_denoised_in_colour(page: Any, server: LiveServer) -> None:
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelectorAll('#noise option').length > 0")
    page.select_option("#noise", "gaussian")
    page.eval_on_selector("#level", "slider => { slider.value = '0.1'; }")
    page.click("button.sample[data-src$='photo-chelsea.png']")
    page.wait_for_function("document.getElementById('denoised-psnr').textContent.includes('dB')")
    page.wait_for_function("document.querySelector('#denoised').naturalWidth === 451")
    assert psnr_shown(page, "#denoised-psnr") > psnr_shown(page, "#noisy-psnr") + 6
    assert shown_image(page, "#denoised").shape == (300, 451, 3)


def test_demo_page_denoises_a_users_noisy_photo_as_it_is(page: Any, server: LiveServer, tmp_path: Path) -> None:
    """What the service is for: a photo that came noisy, uploaded and denoised with no noise added, at full size."""
    clean = np.asarray(Image.open(FIXTURE_ROOT / "colour" / "coffee.png").convert("RGB"), dtype=np.float64)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    upload = tmp_path / "my-noisy-photo.png"
    Image.fromarray(noisy).save(upload)
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelectorAll('#noise option').length > 1")
    page.select_option("#noise", "")
    assert page.is_disabled("#level") and page.is_disabled("#seed")
    page.set_input_files("#upload", str(upload))
    page.wait_for_function("document.getElementById('status').textContent.includes('no noise added')")
    page.wait_for_function("document.querySelector('#denoised').naturalWidth === 96")
    assert page.is_hidden("#clean-figure") and page.inner_text("#noisy-label") == "your image"
    assert page.inner_text("#noisy-psnr") == page.inner_text("#denoised-psnr") == ""
    assert "photo-blind" in page.inner_text("#status")
    denoised = shown_image(page, "#denoised").astype(np.float64)
    assert np.mean((denoised - clean) ** 2) < np.mean((noisy - clean) ** 2) / 3  # better, not just returned


@pytest.mark.parametrize(
    "kind",
    ["tiff", pytest.param("heic", marks=pytest.mark.skipif("HEIC" not in ACCEPTED_FORMATS, reason="no pi-heif here"))],
)
def test_an_upload_the_browser_cannot_show_is_shown_as_the_service_reads_it(
    page: Any, server: LiveServer, tmp_path: Path, kind: str
) -> None:
    """Chromium shows no TIFF and no HEIC; the page shows the service's own PNG of the upload instead, so the
    user sees what was denoised, as the service read it (a phone's HEIC turned as the file says)."""
    photo = Image.open(FIXTURE_ROOT / "colour" / "coffee.png").convert("RGB")
    if kind == "heic":
        upload = FIXTURE_ROOT / "phone" / "coffee-turned.heic"  # a 64×48 crop, turned: 48×64 (test_images)
        photo = photo.crop((16, 24, 80, 72)).transpose(Image.Transpose.ROTATE_270)
    else:
        upload = tmp_path / "scan.tif"
        photo.save(upload)
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelectorAll('#noise option').length > 1")
    page.select_option("#noise", "")
    page.set_input_files("#upload", str(upload))
    page.wait_for_function("document.getElementById('status').textContent.includes('no noise added')")
    # 0 wide while the browser shows the file itself, which it cannot
    page.wait_for_function(f"document.querySelector('#noisy').naturalWidth === {photo.width}")
    shown = page.evaluate(
        """() => {
            const img = document.querySelector('#noisy');
            const canvas = document.createElement('canvas');
            [canvas.width, canvas.height] = [img.naturalWidth, img.naturalHeight];
            const context = canvas.getContext('2d');
            context.drawImage(img, 0, 0);
            return Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data);
        }"""
    )
    pixels = np.array(shown, dtype=np.uint8).reshape(photo.height, photo.width, 4)[..., :3].astype(int)
    error = np.abs(pixels - np.asarray(photo, dtype=int)).mean()
    assert error == 0 if kind == "tiff" else error < 5  # HEIC is lossy (37 dB here)


def test_a_photo_starts_at_a_level_the_photo_model_was_trained_for(page: Any, server: LiveServer) -> None:
    """Gaussian 0.3, the digits' default, is σ 76/255, past the photo model's 55/255: a photo starts at the photo
    level GET /noises gives (σ 0.1), a digit at its reference default, and a level the user moved stays theirs."""
    from models.corruptions import NOISES

    page.goto(server.url + "/")
    page.wait_for_function("document.querySelectorAll('#noise option').length > 0")
    assert page.is_hidden("#results")  # no empty, broken-looking figures before an image is chosen
    page.select_option("#noise", "gaussian")
    assert float(page.input_value("#level")) == NOISES["gaussian"].default_level
    page.click("button.sample[data-src$='photo-chelsea.png']")
    page.wait_for_function("document.getElementById('denoised-psnr').textContent.includes('dB')")
    assert float(page.input_value("#level")) == NOISES["gaussian"].photo_level == 0.1
    assert "gaussian at 0.1 " in page.inner_text("#status")  # the request was made at the photo level
    page.click("button.sample >> nth=0")  # a digit
    page.wait_for_function("document.querySelector('#denoised').naturalWidth === 28")
    assert float(page.input_value("#level")) == NOISES["gaussian"].default_level
    page.fill("#level", "0.45")  # the user's own level (fill fires input and change)
    page.wait_for_function("document.getElementById('status').textContent.includes('gaussian at 0.45 ')")
    page.click("button.sample[data-src$='photo-chelsea.png']")
    page.wait_for_function("document.querySelector('#denoised').naturalWidth === 451")
    assert float(page.input_value("#level")) == 0.45


def test_the_denoised_image_downloads_at_full_resolution_named_after_the_upload(page: Any, server: LiveServer) -> None:
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelectorAll('#noise option').length > 0")
    assert page.is_hidden("#download")
    page.click("button.sample[data-src$='photo-chelsea.png']")
    page.wait_for_function("document.querySelector('#denoised').naturalWidth === 451")
    with page.expect_download() as download_info:
        page.click("#download")
    download = download_info.value
    assert download.suggested_filename == "photo-chelsea-denoised.png"
    saved = np.asarray(Image.open(download.path()))
    np.testing.assert_array_equal(saved, shown_image(page, "#denoised"))  # the very image shown, 451×300 in colour
    assert saved.shape == (300, 451, 3)
