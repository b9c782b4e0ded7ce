"""`lyrics demo-ui` in a real headless browser: Debian's chromium driven by selenium + chromedriver.

The page is served by a `lyrics demo-ui` process on 127.0.0.1; the browser may resolve nothing but
loopback (`--host-resolver-rules`), and gradio's analytics are off, so nothing reaches the internet.
Skipped with a reason when chromium, chromedriver or selenium is missing (`.ci/run` installs them).

The drawing test drags a real mouse over the image (the component's canvas) and checks the region
the page sent, in pixels of the uploaded image (shown scaled down), the streamed answer and the
answer's box drawn; it saves a screenshot (`tmp_path`, and `$LYRICS_ARTIFACTS` when set; the one in
docs/images/demo-ui-region.png came from it). Its checkpoint is fitted to answer with a box
(`boxckpt.py`). The helpers that read the annotator's value are tested without a browser.
"""

import contextlib
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import httpx
import pytest
from PIL import Image

from inference.boxckpt import ANSWER_BOX_NORM, train_box_answer
from inference.tinyckpt import scene

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
QUESTION = "what color is the circle?"
REGION_QUESTION = "What is the object in <region>?"
MAGENTA = (255, 0, 255)  # lyrics.inference.drawing.ANSWER_COLOUR


def browser_missing() -> str | None:
    if not os.path.exists(CHROMIUM) or not os.path.exists(CHROMEDRIVER):
        return "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_demo(checkpoint):
    """A `lyrics demo-ui` process on a free loopback port; yields its URL once it answers."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "NO_PROXY": "127.0.0.1"}
    command = [sys.executable, "-m", "lyrics", "demo-ui", "--model", str(checkpoint), "--port", str(port), "--max-new-tokens", "16"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            try:
                if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "demo did not start"
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def demo_url(checkpoint):
    with serve_demo(checkpoint) as url:
        yield url


@pytest.fixture(scope="module")
def big_scene():
    """A toy scene larger than the page shows it, so drawn boxes must be scaled back."""
    return scene(2).resize((960, 720), Image.Resampling.NEAREST)


@pytest.fixture(scope="module")
def box_checkpoint(checkpoint, big_scene, tmp_path_factory):
    return train_box_answer(checkpoint, tmp_path_factory.mktemp("box") / "ckpt", big_scene, REGION_QUESTION)


@pytest.fixture(scope="module")
def box_demo_url(box_checkpoint):
    if browser_missing():
        pytest.skip(browser_missing())
    with serve_demo(box_checkpoint) as url:
        yield url


@pytest.fixture
def browser():
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="lyrics-chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,1400",
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def upload(browser, wait, path, tag):
    """Upload an image and wait for the refiner's tags in the details panel."""
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, "#image-input input[type=file]").send_keys(str(path))
    wait.until(lambda d: tag in d.find_element(By.CSS_SELECTOR, "#details").text)


def ask(browser, question):
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, "#question textarea").send_keys(question)
    browser.find_element(By.CSS_SELECTOR, "#send").click()


def test_upload_ask_and_see_answer_and_picture(browser, demo_url, pipe, scenes, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    scenes[2].save(tmp_path / "scene.png")
    expected = pipe(scenes[2], QUESTION, max_new_tokens=16)
    wait = WebDriverWait(browser, 90)
    browser.get(demo_url)
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#image-input input[type=file]"))
    upload(browser, wait, tmp_path / "scene.png", expected.tags[0])  # the refiner runs on upload
    ask(browser, QUESTION)
    wait.until(lambda d: "answer_boxes" in d.find_element(By.CSS_SELECTOR, "#details").text)
    chat = browser.find_element(By.CSS_SELECTOR, "#chat").text
    assert QUESTION in chat and expected.text in chat
    picture = browser.find_element(By.CSS_SELECTOR, "#picture img")
    width = browser.execute_script("return arguments[0].complete ? arguments[0].naturalWidth : 0", picture)
    assert width == scenes[2].width  # the drawn picture (refiner objects + answer boxes) is shown
    browser.save_screenshot(str(tmp_path / "demo.png"))


# --- drawing regions ---------------------------------------------------------------------------------
RECORD_POINTER = """
if (!window.lyricsPointer)
    for (const kind of ["pointerdown", "pointerup"])
        document.addEventListener(kind, e => window.lyricsPointer.push([e.clientX, e.clientY]), true);
window.lyricsPointer = [];
"""


def drag(browser, canvas, start, by):
    """A real mouse drag on the canvas from `start` (CSS pixels from its centre) by `by`; returns the
    (x, y) where the button went down and up, in the canvas's own pixels, as the page saw them."""
    from selenium.webdriver.common.action_chains import ActionChains

    browser.execute_script(RECORD_POINTER)
    half = (by[0] // 2, by[1] // 2)
    ActionChains(browser).move_to_element_with_offset(canvas, *start).click_and_hold().move_by_offset(*half).move_by_offset(
        by[0] - half[0], by[1] - half[1]
    ).release().perform()  # fmt: skip
    rect = browser.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.width, r.height]", canvas)
    size = browser.execute_script("return [arguments[0].width, arguments[0].height]", canvas)
    points = browser.execute_script("return window.lyricsPointer")
    assert len(points) == 2, points
    return [((x - rect[0]) * size[0] / rect[2], (y - rect[1]) * size[1] / rect[3]) for x, y in points]


def expected_region(points, canvas_width, image_width):
    """The drag's box in image pixels: the page shows an image wider than the canvas scaled to the
    canvas's width, from its top-left corner."""
    scale = image_width / canvas_width
    (x1, y1), (x2, y2) = points
    return (min(x1, x2) * scale, min(y1, y2) * scale, max(x1, x2) * scale, max(y1, y2) * scale)


def details_text(browser) -> str:
    """The details panel's JSON as text (without the panel's label, progress timer and buttons)."""
    return browser.execute_script(
        "const root = document.querySelector('#details .json-node'); if (!root) return '';"
        " const n = root.cloneNode(true); n.querySelectorAll('button').forEach(b => b.remove()); return n.textContent"
    )  # fmt: skip


def details_regions(browser):
    """The regions listed in the details panel (the boxes the page sent), read from its text."""
    match = re.search(r'"regions"(.*?)"answer_boxes"', details_text(browser), re.S)
    assert match, details_text(browser)[-2000:]
    numbers = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", match.group(1))]
    return [tuple(numbers[i + 1 : i + 5]) for i in range(0, len(numbers), 5)]


def answered(browser, before):
    """Wait for the answer's last update: the details panel (it changes only then) differs from
    `before` and lists the answer's boxes."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 60).until(lambda d: details_text(d) != before and "answer_boxes" in details_text(d))


def picture_pixels(browser, demo_url):
    from selenium.webdriver.common.by import By

    src = browser.find_element(By.CSS_SELECTOR, "#picture img").get_attribute("src")
    assert src.startswith(demo_url), src
    return Image.open(io.BytesIO(httpx.get(src, timeout=10, trust_env=False).content)).convert("RGB")


def save_artifact(browser, tmp_path, name="demo-ui-region.png"):
    path = tmp_path / name
    browser.save_screenshot(str(path))
    if os.environ.get("LYRICS_ARTIFACTS"):
        os.makedirs(os.environ["LYRICS_ARTIFACTS"], exist_ok=True)
        shutil.copy(path, os.path.join(os.environ["LYRICS_ARTIFACTS"], name))
    return path


def test_draw_a_region_ask_and_see_the_answer_box(browser, box_demo_url, box_checkpoint, big_scene, tmp_path):
    """Drag a box, ask about `<region>`, see the region sent in image pixels, the answer and its box;
    clear and redraw for a second turn; too many boxes for the question's placeholders is an error
    shown in the page. No request leaves 127.0.0.1."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from lyrics.inference.pipeline import LyricsPipeline

    pipe = LyricsPipeline.from_pretrained(box_checkpoint)
    tag = pipe.refine([big_scene])[0].tags[0]
    big_scene.save(tmp_path / "scene.png")
    wait = WebDriverWait(browser, 90)
    browser.get(box_demo_url)
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#image-input input[type=file]"))
    upload(browser, wait, tmp_path / "scene.png", tag)
    canvas = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#image-input canvas"))
    canvas_width = browser.execute_script("return arguments[0].width", canvas)
    assert canvas_width < big_scene.width  # shown scaled down: the page must scale the box back

    # turn 1: one box, the question names it
    region = expected_region(drag(browser, canvas, (-110, -90), (130, 85)), canvas_width, big_scene.width)
    before = details_text(browser)
    ask(browser, REGION_QUESTION)
    answered(browser, before)
    (sent,) = details_regions(browser)
    assert sent == pytest.approx(region, abs=1.01), (sent, region)  # in pixels of the uploaded image
    expected = pipe(big_scene, REGION_QUESTION, regions=[sent], max_new_tokens=16)
    assert expected.boxes and expected.boxes[0].box_norm == pytest.approx(ANSWER_BOX_NORM)
    chat = browser.find_element(By.CSS_SELECTOR, "#chat").text
    assert REGION_QUESTION in chat and expected.text in chat
    picture = picture_pixels(browser, box_demo_url)
    assert picture.size == big_scene.size
    x1, y1, x2, y2 = expected.boxes[0].box
    assert picture.getpixel((round(x1) + 2, round((y1 + y2) / 2))) == MAGENTA  # the answer's box is drawn
    save_artifact(browser, tmp_path)

    # turn 2: clear the box, draw another one; only the new one is sent, with the dialogue so far
    browser.find_element(By.CSS_SELECTOR, "#clear-boxes").click()
    time.sleep(0.5)
    region = expected_region(drag(browser, canvas, (40, 20), (120, 100)), canvas_width, big_scene.width)
    before = details_text(browser)
    ask(browser, REGION_QUESTION)
    answered(browser, before)
    (sent,) = details_regions(browser)
    assert sent == pytest.approx(region, abs=1.01), (sent, region)
    second = pipe(big_scene, REGION_QUESTION, regions=[sent], history=expected.conversation, max_new_tokens=16)
    chat = browser.find_element(By.CSS_SELECTOR, "#chat").text
    assert second.boxes and chat.count(REGION_QUESTION) == 2 and second.text in chat.split(REGION_QUESTION)[-1], chat

    # two boxes, one placeholder: a visible error, no answer
    drag(browser, canvas, (-200, 60), (60, 60))
    time.sleep(0.5)
    ask(browser, REGION_QUESTION)
    # the toast appears before its text is filled in: wait for the message itself
    toast = wait.until(lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, "[data-testid='toast-body']") if "placeholder" in e.text), None))
    assert "<region>" in toast.text, toast.text  # the whole message, the placeholder too
    assert browser.find_element(By.CSS_SELECTOR, "#chat").text.count(REGION_QUESTION) == 2

    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    remote = [name for name in resources if not name.startswith((box_demo_url, "data:", "blob:"))]
    assert resources and not remote, remote


# --- the annotator's value, without a browser -------------------------------------------------------
def box(x1, y1, x2, y2, scale=1.0):
    """A box as the component sends it: in display pixels, with the display's scale."""
    shown = {name: v * scale for name, v in zip(("xmin", "ymin", "xmax", "ymax"), (x1, y1, x2, y2))}
    return {**shown, "scaleFactor": scale, "label": "", "color": "rgb(255, 168, 77)"}


def test_boxes_are_numbered_in_drawing_order():
    from lyrics.inference.webui import numbered, without_boxes

    value = {"image": {"path": "x.png"}, "boxes": [box(5, 5, 50, 50), box(0, 0, 20, 20)], "orientation": 0}  # newest first
    labelled = numbered(value)
    assert [b["label"] for b in labelled["boxes"]] == ["2", "1"]
    assert numbered(labelled) is None  # already right: the page keeps its value
    assert numbered({**value, "boxes": [box(5, 5, 5, 5)] + value["boxes"]}) is None  # a box being drawn
    assert without_boxes(labelled)["boxes"] == [] and without_boxes({"image": {}, "boxes": []}) is None


def test_drawn_boxes_become_regions_in_image_pixels():
    from gradio_image_annotation import image_annotator

    from lyrics.inference.webui import drawn_regions

    annotator = image_annotator(render=False)
    value = {"boxes": [box(480, 300, 960, 727, scale=0.615625), box(10, 20, 110, 220, scale=0.5)]}
    assert drawn_regions(annotator, value, 960, 727) == [(10, 20, 110, 220), (480, 300, 960, 727)]
    # A box drawn to the bottom edge: the component rounds the shown height (447.56 -> 448 pixels),
    # so it reports y2 = 448 / 0.615625 = 727.7, within one display pixel of the edge: the edge.
    edge = {**box(0, 0, 100, 100, scale=0.615625), "ymax": 448}
    assert drawn_regions(annotator, {"boxes": [edge]}, 960, 727) == [(0, 0, 100, 727)]
    # Beyond that it stays outside, for the pipeline to refuse.
    assert drawn_regions(annotator, {"boxes": [box(0, 0, 100, 740)]}, 960, 727) == [(0, 0, 100, 740)]


def test_a_turned_image_is_turned_for_the_model(tmp_path):
    from lyrics.inference.webui import drawn_image

    Image.new("RGB", (40, 20)).save(tmp_path / "wide.png")
    loader = SimpleNamespace(load_image=lambda path: Image.open(path).convert("RGB"))
    value = {"image": {"path": str(tmp_path / "wide.png")}, "boxes": [], "orientation": 1}
    assert drawn_image(loader, value).size == (20, 40)
    assert drawn_image(loader, {**value, "orientation": 2}).size == (40, 20)
    assert drawn_image(loader, None) is None


@pytest.mark.parametrize(
    "regions, question",
    [([(0, 0, 200, 50)], REGION_QUESTION), ([(10, 10, 10, 40)], REGION_QUESTION), ([(1, 1, 9, 9), (2, 2, 8, 8)], REGION_QUESTION)],
    ids=["outside", "no-area", "more-boxes-than-placeholders"],
)
def test_bad_regions_are_an_error_in_the_page(pipe, scenes, tmp_path, regions, question):
    """The page's ask handler turns the refusal of a bad region into `gr.Error` (a message in the
    page), never a crash or a clamped box."""
    import gradio as gr

    from lyrics.inference.webui import build_demo

    scenes[0].save(tmp_path / "scene.png")
    demo = build_demo(pipe, max_new_tokens=8)
    on_ask = next(f.fn for f in demo.fns.values() if f.name == "on_ask")
    boxes = [box(*r) for r in reversed(regions)]  # newest first, as the component lists them
    value = {"image": {"path": str(tmp_path / "scene.png")}, "boxes": boxes, "orientation": 0}
    with pytest.raises(gr.Error) as error:
        list(on_ask(value, question, 8, 0.0, [], None))
    assert "region" in str(error.value)
