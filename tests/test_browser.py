"""The app in a real browser (Playwright + Debian's chromium): generate, draw a horizon with the mouse, check
the overlay and the question, optimize, watch the progress, see the before/after slider, download the LoRA.

Needs `chromium` on PATH (apt-get install chromium) and the playwright Python package; no `playwright install`.
Without them the test fails when CI is set and is skipped otherwise. A screenshot of the finished page goes
to test-output/studio.png.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest
from app_fixtures import running, server_fixture  # noqa: F401  (the "server" fixture)

from pipelines.lora import lora_metadata
from pipelines.presets import get_preset
from studio import gpu

OUT = Path(__file__).resolve().parent.parent / "test-output"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
STEPS = 30

pytestmark = pytest.mark.slow  # an in-process server (and a browser): minutes, not seconds


def _missing(what: str) -> None:
    message = f"{what} is not installed: the browser test cannot run"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set: install it, see .ci/run)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    if not chromium:
        _missing("chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright Python package")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# Every text the status box and Gradio's progress bars show, recorded in the page as the DOM changes: a fast run
# (or a slow test machine) cannot slip between two polls of the test.
WATCH_PROGRESS = """() => {
    window.seen = {status: [], bars: []};
    const record = () => {
        const status = document.querySelector('#visual-status');
        if (status) window.seen.status.push(status.innerText);
        document.querySelectorAll('.progress-text').forEach(bar => window.seen.bars.push(bar.innerText));
    };
    new MutationObserver(record).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def open_page(browser, server, **options) -> tuple:
    """A fresh browser context on the app, its page loaded to the header, and the page's script errors (a list the
    test asserts empty at the end)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, **options)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url, wait_until="domcontentloaded")
    page.wait_for_selector("#header", timeout=60_000)
    return context, page, errors


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_draw_optimize_and_download(browser, server, tmp_path):
    context, page, errors = open_page(browser, server, accept_downloads=True)
    page.wait_for_selector("#canvas .pixi-target canvas", timeout=60_000)
    assert "images are noise" in page.locator("#header").inner_text()

    # the base image
    page.click("#generate")
    page.wait_for_selector("#base img", timeout=60_000)
    time.sleep(1.0)  # the canvas redraws with the new background

    # a horizon stroke with the mouse, rising to the right, at 30 % of the height
    canvas = page.locator("#canvas .pixi-target canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    zoom = float(page.locator("#canvas").get_by_text(re.compile(r"^\d+%$")).first.inner_text().rstrip("%")) / 100
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    def screen(x: float, y: float) -> tuple[float, float]:  # canvas pixels (512 x 512) -> page
        return cx + (x - 256) * zoom, cy + (y - 256) * zoom

    page.mouse.move(*screen(40, 0.3 * 512 + 20))
    page.mouse.down()
    page.mouse.move(*screen(470, 0.3 * 512 - 20), steps=8)
    page.mouse.up()

    # the overlay preview and the exact question
    note = wait_until(lambda: (t := page.locator("#preview-note").inner_text()) and "horizon at y=" in t and t,
                      30, "the overlay preview")
    y, tilt = map(float, re.search(r"horizon at y=([\d.]+), tilt (-?[\d.]+) deg", note).groups())
    assert abs(y - 0.3) < 0.03 and 3.5 < tilt < 7.0, note
    assert "Is the horizon of the scene aligned with the red line? Answer with Yes or No." in note
    assert "aligned with the red line" in page.locator("#questions textarea").input_value()  # editable
    assert page.locator("#preview img").count() == 1

    # a short optimization: live progress, then the before/after slider and the LoRA
    steps = page.locator("#steps input[type=number]")
    steps.fill(str(STEPS))
    steps.press("Enter")
    page.evaluate(WATCH_PROGRESS)  # records what the page showed while it ran, however fast the run is
    page.click("#optimize")
    status = page.locator("#visual-status")
    wait_until(lambda: "Done" in status.inner_text(), 120, "the end of the run")
    seen = page.evaluate("window.seen")
    statuses, bars = list(dict.fromkeys(seen["status"])), list(dict.fromkeys(seen["bars"]))  # distinct, in order
    assert any(re.search(rf"Optimizing: step [1-9]\d*/{STEPS}", t) for t in statuses), statuses[-5:]
    assert any(f"/{STEPS}" in t for t in bars), f"no progress bar was shown during the run, only {bars[:5]}"
    assert page.locator("#visual-live img").count() == 1
    assert page.locator("#visual-slider img").count() == 2
    scores = page.locator("#visual-scores").inner_text()
    assert "before" in scores and "after" in scores and "After / before: texture x" in scores
    # Both rows of unseen seeds (scale 0 and 1) in view: nothing inside the gallery scrolls.
    wait_until(lambda: page.locator("#visual-unseen img").count() >= 8, 30, "the unseen seeds' pictures")
    scrolling = page.evaluate("""() => [...document.querySelectorAll('#visual-unseen *')].filter(e => {
        const s = getComputedStyle(e);
        return /(auto|scroll)/.test(s.overflowY) && e.scrollHeight > e.clientHeight + 2; })
        .map(e => `${e.className} ${e.scrollHeight}>${e.clientHeight}`)""")
    assert not scrolling, f"the unseen seeds' gallery scrolls inside itself: {scrolling}"
    assert len(page.locator("#visual-loss canvas, #visual-loss svg").all()) > 0

    with page.expect_download() as download:
        page.click("#visual-download")
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    assert path.suffix == ".safetensors"
    meta = lora_metadata(path)
    assert meta["prompt"] == "a tropical beach at sunset" and meta["steps"] == STEPS
    assert "tilt" in meta["overlay"]

    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / "studio.png"), full_page=True)
    assert not errors, errors
    generator, _ = gpu.models(get_preset("tiny"))
    assert not getattr(generator.transformer, "peft_config", None)
    context.close()


@pytest.fixture(scope="module")
def toy_server(tmp_path_factory):
    """The app on the trained toy world: its VLM writes, so Refine has candidates to rank (the tiny preset's random
    VLM writes byte soup, and the page says there is nothing to rank)."""
    with running(tmp_path_factory.mktemp("toy-browser"), preset="toy") as server:
        yield server


def test_score_and_refine_tabs(browser, toy_server):
    context, page, errors = open_page(browser, toy_server)

    # Score: generate two images, score them, see the rubric and the order-free verdict
    page.get_by_role("tab", name="Score").click()
    page.click("#score-generate")
    wait_until(lambda: page.locator("#score-a-view img").count() and page.locator("#score-b-view img").count(), 60,
               "images A and B")
    page.click("#score")
    result = page.locator("#score-result")
    text = wait_until(lambda: (t := result.inner_text()) and "A or B?" in t and t, 60, "the verdict")
    assert "Image A" in text and "Image B" in text and "aesthetic" in text and "VQAScore" in text
    page.screenshot(path=str(OUT / "score.png"), full_page=True)

    # Refine prompt: three candidates, ranked, and the winner sent to the Visual prompts tab
    page.get_by_role("tab", name="Refine prompt").click()
    n = page.locator("#refine-prompt").locator("xpath=ancestor::div[contains(@class,'column')][1]") \
        .locator("input[type=number]").first
    n.fill("3")
    n.press("Enter")
    page.click("#refine")
    wait_until(lambda: "candidates and your prompt" in page.locator("#refine-note").inner_text(), 90,
               "the ranked candidates")
    assert "3 candidates and your prompt" in page.locator("#refine-note").inner_text()
    assert page.locator("#refine-gallery img").count() >= 4
    assert "[baseline]" in page.locator("#refine-table").inner_text()
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / "refine.png"), full_page=True)
    chosen = page.locator("#refine-choice input").input_value()
    assert chosen.startswith("#1: ")
    page.click("#refine-use")
    wait_until(lambda: page.locator("#prompt textarea").is_visible(), 20, "the Visual prompts tab")
    wait_until(lambda: page.locator("#prompt textarea").input_value() == chosen[4:], 20, "the sent prompt")
    assert not errors, errors
    context.close()


def test_self_improve_then_refine_with_the_improved_vlm(browser, toy_server):
    """Self-improve in the page: a round on two prompts shows its before/after figures and unlocks the box that lets
    Refine write and judge with the session's VLM LoRA; ticked, Refine says so."""
    context, page, errors = open_page(browser, toy_server)
    page.get_by_role("tab", name="Refine prompt").click()
    assert page.locator("#refine-use-lora input").is_disabled()  # nothing to use before a round
    page.get_by_text("Self-improve: one self-rewarding round on your prompts").click()
    page.locator("#self-improve-prompts textarea").fill("a beach\na lake")
    page.click("#self-improve")
    text = wait_until(lambda: (t := page.locator("#self-improve-result").inner_text()) and "One round done" in t
                      and t, 240, "the self-improve round")
    assert "analytic aesthetic (0-5)" in text and "->" in text, text
    box = page.locator("#refine-use-lora input")
    wait_until(lambda: box.is_enabled() and box.is_checked(), 20, "the ticked box")
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / "self-improve.png"), full_page=True)
    page.click("#refine")
    note = wait_until(lambda: (t := page.locator("#refine-note").inner_text()) and "candidates" in t and t, 120,
                      "the refined candidates")
    assert "self-improved VLM" in note, note
    box.uncheck()
    page.click("#refine")
    wait_until(lambda: (t := page.locator("#refine-note").inner_text()) and "candidates" in t
               and "self-improved" not in t, 120, "a plain refine")
    assert not errors, errors
    context.close()


def test_refine_through_an_image_from_the_mode_switch(browser, toy_server):
    """The PRIP mode in the page: the switch shows the pivot count and its own button, the run lists the pivot,
    the baseline and the refined prompts, each beginning with the user's prompt, and the switch back restores the
    text mode's button."""
    context, page, errors = open_page(browser, toy_server)
    page.get_by_role("tab", name="Refine prompt").click()
    assert page.locator("#refine").is_visible() and not page.locator("#refine-pivot").is_visible()

    page.locator("#refine-mode").get_by_text("Through an image (PRIP)").click()
    wait_until(lambda: page.locator("#refine-pivot").is_visible(), 20, "the pivot mode's button")
    assert page.locator("#refine-pivots").is_visible() and not page.locator("#refine").is_visible()
    prompt = page.locator("#refine-prompt textarea").input_value()
    n = page.locator("#refine-prompt").locator("xpath=ancestor::div[contains(@class,'column')][1]") \
        .locator("input[type=number]").first
    n.fill("2")
    n.press("Enter")
    page.click("#refine-pivot")
    note = wait_until(lambda: (t := page.locator("#refine-note").inner_text()) and "pivot is" in t and t, 120,
                      "the pivot mode's result")
    assert "the best of 4 images of your prompt" in note, note
    table = page.locator("#refine-table").inner_text()
    assert "pivot" in table and "[baseline]" in table, table
    grid = page.locator("#refine-table [role=row]:not([aria-rowindex='1'])")  # the header row is row 1
    rows = [[c.strip() for c in r.split("\n") if c.strip()] for r in grid.all_inner_texts() if r.strip()]
    assert [r[0] for r in rows] == ["pivot", "1", "2", "3"], rows  # the pivot, then baseline + 2 refined, ranked
    assert all(r[-1].startswith(prompt) for r in rows), (prompt, rows)
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / "refine-pivot.png"), full_page=True)

    page.locator("#refine-mode").get_by_text("Rewrite the text (self-rewarding)").click()
    wait_until(lambda: page.locator("#refine").is_visible(), 20, "the text mode's button")
    assert not page.locator("#refine-pivot").is_visible()
    assert not errors, errors
    context.close()


TAB_NAMES = ["Visual prompts", "Ask anything", "Use a LoRA", "Score", "Refine prompt"]


def tab_buttons(page) -> list[tuple[str, bool]]:
    """Every tab button of the page: its text and whether it is shown."""
    return page.evaluate("() => Array.from(document.querySelectorAll('[role=tab]'))"
                         ".map(b => [b.innerText.trim(), !!b.offsetParent])")


def test_the_page_a_newcomer_meets(browser, server):
    """The landing page explains instead of erring; the tab bar keeps its five tabs, each once and shown, however
    they are clicked (a component made between tabs once doubled the next tab's button); Download with nothing
    to download says so."""
    context, page, errors = open_page(browser, server)
    note = wait_until(lambda: (t := page.locator("#preview-note").inner_text()) and "yet" in t and t, 30,
                      "the landing preview")
    assert "Nothing to show yet" in note and "type its height" in note and "Overlay:" not in note, note
    assert page.locator("#horizon-y input, #horizon-y textarea").first.input_value() == ""
    for order in (TAB_NAMES[::-1], TAB_NAMES, [TAB_NAMES[i] for i in (3, 1, 4, 0, 2)]):
        for name in order * 2:
            page.get_by_role("tab", name=name, exact=True).click()
            buttons = tab_buttons(page)
            assert [text for text, _ in buttons] == TAB_NAMES and all(shown for _, shown in buttons), (name, buttons)
    page.get_by_role("tab", name="Visual prompts", exact=True).click()
    download = page.locator("#visual-download")
    assert download.is_disabled() and "No LoRA to download yet: press Optimize" in download.inner_text()
    assert not errors, errors
    context.close()
