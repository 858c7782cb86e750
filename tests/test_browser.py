"""`nextscale serve` as a user meets it: a real server process on a free port, driven from headless Chromium
(Debian's chromium + chromium-driver, through Selenium). Generate a digit, edit an uploaded one, see bad input
refused on the page; the server writes nothing and stops cleanly on Ctrl-C.

CI sets NEXTSCALE_REQUIRE_BROWSER=1, so a missing browser fails there instead of skipping; elsewhere these
tests skip with the reason. NEXTSCALE_SCREENSHOTS=DIR saves the README's screenshots.
"""

import base64
import io
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def need_browser():
    missing = [name for name, found in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not found]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    if missing:
        why = f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver; pip install selenium)"
        if os.environ.get("NEXTSCALE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"NEXTSCALE_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)


def run_server(root: Path, model_args: list[str]):
    """`nextscale serve MODEL_ARGS --port 0` in an empty folder, with empty HOME and TMPDIR: yields its URL; then
    Ctrl-C must stop it with exit code 0, and the three folders must still be empty."""
    pytest.importorskip("uvicorn", reason="the web extra (pip install 'nextscale[web]') is not installed")
    folders = {name: root / name for name in ("cwd", "home", "tmp")}
    for folder in folders.values():
        folder.mkdir()
    env = {**os.environ, "HOME": str(folders["home"]), "TMPDIR": str(folders["tmp"]), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "nextscale", "serve", *model_args, "--port", "0", "--device", "cpu"]
    process = subprocess.Popen(
        command, cwd=folders["cwd"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        url = wait_for_url(process, timeout=180)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output = process.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, output
    assert "Traceback" not in output, output
    for name, folder in folders.items():
        assert not any(folder.iterdir()), f"the server wrote into {name}: {list(folder.iterdir())}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The built-in digits model's server (the picker offers the other built-in models)."""
    yield from run_server(tmp_path_factory.mktemp("serve"), ["--model", "digits"])


OWN_CLASSES = ["cat", "dog", "emu", "fox"]


@pytest.fixture(scope="module")
def own_model(tmp_path_factory) -> str:
    """A tiny model of the user's own (4 named classes, 4 scales): the picker lists it first."""
    from nextscale import save_model
    from tests.helpers import tiny_pair

    vae, var = tiny_pair()
    var.provenance = {"classes": OWN_CLASSES}
    return str(save_model(vae, var, tmp_path_factory.mktemp("own") / "my-model"))


@pytest.fixture(scope="module")
def own_server(tmp_path_factory, own_model):
    yield from run_server(tmp_path_factory.mktemp("serve-own"), ["--model", own_model])


def wait_for_url(process, timeout: float) -> str:
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        if ready:
            line = process.stdout.readline()
            seen.append(line)
            found = re.search(r"at (http://\S+/)", line)
            if found:
                return found.group(1)
        if process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"nextscale serve printed no URL: {''.join(seen)}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1000,1150",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def open_page(browser, url: str):
    from selenium.webdriver.support.ui import Select

    browser.get(url)
    wait(browser, lambda d: len(Select(d.find_element("id", "generate-class")).options) > 1)
    return browser


@pytest.fixture
def page(browser, server):
    return open_page(browser, server)


def wait(driver, condition, timeout: float = 120):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def set_field(driver, element_id: str, value: str) -> None:
    field = driver.find_element("id", element_id)
    field.clear()
    field.send_keys(value)


def shown_png(image_element) -> Image.Image:
    source = image_element.get_attribute("src")
    assert source.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(source.partition(",")[2])))
    assert image.format == "PNG"
    return image


def screenshot(driver, name: str) -> None:
    folder = os.environ.get("NEXTSCALE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


def drag_box(driver) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = driver.find_element("id", "edit-canvas")
    ActionChains(driver).move_to_element_with_offset(canvas, -70, -40).click_and_hold().move_by_offset(
        60, 40
    ).move_by_offset(60, 40).release().perform()


def results(driver):
    return driver.find_elements("css selector", "#result-images img.result")


def test_generate_a_digit_and_watch_each_scale(page):
    from selenium.webdriver.support.ui import Select

    Select(page.find_element("id", "generate-class")).select_by_visible_text("3")
    set_field(page, "generate-n", "4")
    page.find_element("id", "generate-button").click()
    wait(page, lambda d: len(results(d)) == 4)
    for image in results(page):
        assert shown_png(image).size == (32, 32)  # the model's resolution
    tiles = page.find_elements("css selector", "#pyramid li")
    assert [t.text for t in tiles] == ["1×1", "2×2", "3×3", "4×4", "6×6", "8×8"]
    assert all("drawn" in t.get_attribute("class") for t in tiles)
    assert all(shown_png(t.find_element("tag name", "img")).size == (32, 32) for t in tiles)
    command = page.find_element("id", "command").text
    assert command.startswith("nextscale sample --model digits --class 3 --n 4 --seed 0")
    links = page.find_elements("css selector", "#result-images a.download")
    assert [a.get_attribute("download") for a in links] == [f"nextscale-seed0-{i}.png" for i in range(4)]
    screenshot(page, "serve-generate.png")


def test_upload_a_digit_drag_a_box_and_edit(page, tmp_path):
    from nextscale.data.digits import digits8_to_images, digits_splits

    digit = digits_splits()[1].images8[:1]
    pixels = digits8_to_images(digit, 48)[0].add(1).mul(127.5).round().byte().permute(1, 2, 0).numpy()
    upload = tmp_path / "my-digit.png"
    Image.fromarray(np.ascontiguousarray(pixels)).resize((48, 40)).save(upload)  # not square: cropped to fit
    page.find_element("id", "tab-edit").click()
    page.find_element("id", "edit-file").send_keys(str(upload))
    wait(page, lambda d: d.find_element("id", "edit-input").get_attribute("src"))
    drag_box(page)
    assert page.find_element("id", "edit-region").text.startswith("Box: rows")
    page.find_element("id", "edit-button").click()
    wait(page, lambda d: len(results(d)) == 1)
    figures = page.find_elements("css selector", "#result-images figure")
    assert [f.find_element("tag name", "figcaption").text for f in figures] == ["input", "result"]
    assert shown_png(figures[0].find_element("tag name", "img")).size == (32, 32)
    assert shown_png(results(page)[0]).size == (32, 32)
    assert re.search(
        r"--image=my-digit\.png --box [0-9.]+,[0-9.]+,[0-9.]+,[0-9.]+ --seed 0", page.find_element("id", "command").text
    )
    screenshot(page, "serve-edit.png")


def test_bad_input_shows_a_message_and_the_server_carries_on(page, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("a text file with an image's name")
    page.find_element("id", "tab-edit").click()
    page.find_element("id", "edit-file").send_keys(str(notes))
    wait(page, lambda d: d.find_element("id", "edit-input").get_attribute("src"))
    drag_box(page)
    page.find_element("id", "edit-button").click()
    message = page.find_element("id", "message")
    wait(page, lambda d: message.is_displayed())
    assert "Refused (400): image is not an image this server reads" in message.text
    page.find_element("id", "tab-generate").click()
    set_field(page, "generate-n", "99")
    page.find_element("id", "generate-button").click()
    wait(page, lambda d: message.is_displayed())
    assert "Refused (400): n must be in [1, 16], got 99" in message.text
    set_field(page, "generate-n", "1")
    set_field(page, "generate-seed", "twelve")
    page.find_element("id", "generate-button").click()
    wait(page, lambda d: "seed must be an integer" in message.text)
    set_field(page, "generate-seed", "12")
    page.find_element("id", "generate-button").click()
    wait(page, lambda d: len(results(d)) == 1)
    assert not message.is_displayed()


def test_the_model_picker_switches_the_model_and_a_sample_is_drawn_with_it(browser, own_server, own_model):
    from selenium.webdriver.support.ui import Select

    from nextscale.registry import BUILTIN

    page = open_page(browser, own_server)
    picker = Select(page.find_element("id", "model"))
    assert [o.text for o in picker.options] == [own_model, *BUILTIN]  # the server's model first, then the built-ins
    assert page.find_element("id", "model-info").text == "8×8 px · 4 scales (1×1 to 4×4) · 4 classes"

    def classes() -> list[str]:
        return [o.text for o in Select(page.find_element("id", "generate-class")).options]

    assert classes() == ["unconditional", *(f"{i}: {name}" for i, name in enumerate(OWN_CLASSES))]
    Select(page.find_element("id", "generate-class")).select_by_visible_text("2: emu")
    page.find_element("id", "generate-button").click()
    wait(page, lambda d: len(results(d)) == 1)
    assert [t.text for t in page.find_elements("css selector", "#pyramid li")] == ["1×1", "2×2", "3×3", "4×4"]
    assert page.find_element("css selector", "#result-images figcaption").text == "emu · image 1"

    set_field(page, "generate-seed", "7")
    set_field(page, "generate-top-k", "50")
    picker.select_by_visible_text("digits")
    wait(page, lambda d: d.find_element("id", "model-info").text.startswith("32×32 px · 6 scales (1×1 to 8×8)"))
    assert classes() == ["unconditional", *map(str, range(10))] and not results(page)  # the last model's are gone
    assert page.find_element("id", "generate-seed").get_attribute("value") == "7"  # what was typed stays
    assert page.find_element("id", "generate-top-k").get_attribute("value") == "50"
    assert page.current_url.endswith("?model=digits")
    Select(page.find_element("id", "generate-class")).select_by_visible_text("5")
    page.find_element("id", "generate-button").click()
    wait(page, lambda d: len(results(d)) == 1)
    tiles = page.find_elements("css selector", "#pyramid li")
    assert [t.text for t in tiles] == ["1×1", "2×2", "3×3", "4×4", "6×6", "8×8"]
    assert shown_png(results(page)[0]).size == (32, 32)
    command = page.find_element("id", "command").text
    assert command.startswith("nextscale sample --model digits --class 5 --n 1 --seed 7 --cfg 1.5 --top-k 50")

    open_page(browser, own_server + "?model=digits-small")  # a link to a model opens it
    assert Select(page.find_element("id", "model")).first_selected_option.text == "digits-small"
    assert page.find_element("id", "model-info").text.startswith("32×32 px · 6 scales")
    open_page(browser, own_server + "?model=nope")  # an unknown one says so, and the default shows
    message = page.find_element("id", "message")
    wait(page, lambda d: message.is_displayed())
    assert "Model nope: Refused (400): unknown model 'nope'; this server offers:" in message.text
    assert Select(page.find_element("id", "model")).first_selected_option.text == own_model
    assert page.find_element("id", "model-info").text.startswith("8×8 px · 4 scales")
