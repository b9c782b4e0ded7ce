"""`lyrics demo-ui` in a real headless browser: Debian's chromium driven by selenium + chromedriver.

The page is served by a `lyrics demo-ui` process on 127.0.0.1; the browser may resolve nothing but
loopback (`--host-resolver-rules`), and gradio's analytics are off, so nothing reaches the internet.
Skipped with a reason when chromium, chromedriver or selenium is missing (`.ci/run` installs them).
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
QUESTION = "what color is the circle?"


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


@pytest.fixture
def demo_url(checkpoint):
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


def test_upload_ask_and_see_answer_and_picture(browser, demo_url, pipe, scenes, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    scenes[2].save(tmp_path / "scene.png")
    expected = pipe(scenes[2], QUESTION, max_new_tokens=16)
    wait = WebDriverWait(browser, 90)
    browser.get(demo_url)
    upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#image-input input[type=file]"))
    upload.send_keys(str(tmp_path / "scene.png"))
    # the refiner runs on upload: its tags appear in the details panel
    wait.until(lambda d: expected.tags[0] in d.find_element(By.CSS_SELECTOR, "#details").text)

    question = browser.find_element(By.CSS_SELECTOR, "#question textarea")
    question.send_keys(QUESTION)
    browser.find_element(By.CSS_SELECTOR, "#send").click()
    wait.until(lambda d: "answer_boxes" in d.find_element(By.CSS_SELECTOR, "#details").text)
    chat = browser.find_element(By.CSS_SELECTOR, "#chat").text
    assert QUESTION in chat and expected.text in chat
    picture = browser.find_element(By.CSS_SELECTOR, "#picture img")
    width = browser.execute_script("return arguments[0].complete ? arguments[0].naturalWidth : 0", picture)
    assert width == scenes[2].width  # the drawn picture (refiner objects + answer boxes) is shown
    browser.save_screenshot(str(tmp_path / "demo.png"))
