"""The page in a real browser (Debian's headless Chromium driven by Selenium), as a person at a
clinic uses it: upload a lesion, then a photo of something else, and read what the page shows.
Screenshots of each, on a desktop and a phone's width, are kept as test artifacts: in
$RETRAIN_TEST_ARTIFACTS when set, else in a pytest temporary folder (the path is printed)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.serve.conftest import lesion_image, photo_image

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
DESKTOP, PHONE = (1280, 900), (390, 844)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("RETRAIN_TEST_ARTIFACTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {folder}")
    return folder


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.fail("the browser test needs Debian's chromium and chromium-driver (.ci/run installs them: "
                    "apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-extensions", "--hide-scrollbars"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    lesion_image("malignant", 8123).save(folder / "lesion.jpg")  # the training images' size: the tree is small
    photo_image().save(folder / "photo.jpg", quality=92)
    return {"lesion": folder / "lesion.jpg", "photo": folder / "photo.jpg"}


def _size(driver, width: int, height: int, mobile: bool) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})


def _open(driver, url: str) -> None:
    """The page, once its script has listed the served models."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.getElementById('model').length") > 0)


def _classify(driver, image: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.ID, "image").send_keys(str(image))
    WebDriverWait(driver, 10).until(shown.element_to_be_clickable((By.ID, "classify"))).click()
    WebDriverWait(driver, 120).until(lambda d: d.find_element(By.ID, "result").is_displayed()
                                     or d.find_element(By.ID, "error").is_displayed())
    assert not driver.find_element(By.ID, "error").is_displayed(), driver.find_element(By.ID, "error").text


def _heatmap_loaded(driver) -> bool:
    """Whether the heatmap <img> decoded a picture (its data URL is decoded after the answer shows)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, 10).until(
            lambda d: d.execute_script("return document.getElementById('heatmap-img').naturalWidth") > 0)
    except TimeoutException:
        return False
    return True


def _screenshot(driver, path: Path, width: int, mobile: bool) -> None:
    """The whole page, not only the window: the window made as tall as the page first."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    _size(driver, width, max(height, 600), mobile)
    driver.save_screenshot(str(path))


def _errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]


@pytest.mark.parametrize("width, height, mobile, name", [(*DESKTOP, False, "desktop"), (*PHONE, True, "phone")])
def test_the_page_shows_a_decision_for_a_lesion_and_a_warning_for_a_photo(server, browser, images, artifacts,
                                                                          width, height, mobile, name):
    from selenium.webdriver.common.by import By

    _size(browser, width, height, mobile)
    _open(browser, server.url)
    find = browser.find_element
    assert find(By.ID, "not-a-diagnosis").is_displayed()
    assert find(By.ID, "not-a-diagnosis").text == "Decision support, not a diagnosis"
    assert find(By.ID, "model-choice").is_displayed()  # three models are served
    assert not find(By.ID, "patient").is_displayed()  # the first takes no patient metadata
    assert find(By.ID, "camera").get_attribute("capture") == "environment"

    _classify(browser, images["lesion"])
    decision = find(By.CSS_SELECTOR, "#decision-list li strong").text
    assert decision == "Refer for review: malignant called", decision
    assert not find(By.ID, "ood-warning").is_displayed() and not find(By.ID, "set-aside").is_displayed()
    assert _heatmap_loaded(browser)
    assert find(By.CSS_SELECTOR, "#class-table th").text == "malignant"
    assert find(By.ID, "card").is_displayed() and find(By.ID, "not-a-diagnosis").is_displayed()
    _screenshot(browser, artifacts / f"lesion_{name}.png", width, mobile)
    _size(browser, width, height, mobile)

    _classify(browser, images["photo"])
    warning = find(By.ID, "ood-warning")
    assert warning.is_displayed() and warning.text.startswith("warning: this image is not of the kind the model")
    assert find(By.ID, "set-aside").is_displayed()
    assert "set-aside" in find(By.ID, "decisions").get_attribute("class")
    assert _heatmap_loaded(browser)
    _screenshot(browser, artifacts / f"photo_{name}.png", width, mobile)
    assert _errors(browser) == []


def test_the_patient_metadata_fields_appear_for_the_model_that_takes_them(server, browser, images, artifacts):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _size(browser, *PHONE, True)
    _open(browser, server.url)
    Select(browser.find_element(By.ID, "model")).select_by_visible_text("with_metadata.pb")
    assert browser.find_element(By.ID, "patient").is_displayed()
    browser.find_element(By.NAME, "age").send_keys("71")
    Select(browser.find_element(By.NAME, "sex")).select_by_visible_text("male")
    _classify(browser, images["lesion"])
    assert browser.find_element(By.CSS_SELECTOR, "#decision-list li strong").text.startswith("Refer for review")
    assert browser.find_element(By.ID, "notes").text == ""  # no "every value counts as missing"
    _screenshot(browser, artifacts / "metadata_phone.png", PHONE[0], True)
    assert _errors(browser) == []


def test_a_bad_file_shows_one_error_line_and_the_page_goes_on(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _size(browser, *DESKTOP, False)
    _open(browser, server.url)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image\n" * 20)
    browser.find_element(By.ID, "image").send_keys(str(text))
    browser.find_element(By.ID, "classify").click()
    error = browser.find_element(By.ID, "error")
    WebDriverWait(browser, 60).until(lambda d: error.is_displayed())
    assert error.text == "notes.jpg: not an image, or a format that cannot be read"
    browser.get_log("browser")  # the 400 answer is logged by the browser as a failed resource: expected
    lesion = tmp_path / "lesion.jpg"
    lesion_image("benign", 1).save(lesion)
    _classify(browser, lesion)
    assert browser.find_element(By.CSS_SELECTOR, "#decision-list li strong").text.endswith("does not rule it out")
