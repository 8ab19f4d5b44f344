"""A participant takes the study in a real browser (headless Chromium from the system packages,
driven by Selenium), then the results page is checked for the right counts. Screenshots of a
question on a phone-sized screen and of the results page are saved (to
$CYCLEMASK_STUDY_SCREENSHOTS when set, else the test's temporary folder) for a person to look at.

Needs Debian's `chromium` and `chromium-driver` (CI's .ci/run installs them) and selenium; the
test is skipped with the reason where either is missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from study_helpers import StudyServer, image_sources, make_folders

pytestmark = pytest.mark.browser

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PHONE = (390, 844)  # CSS pixels of a common phone screen


def _browser(phone: bool = True):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    binary = os.environ.get("CHROMIUM") or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    driver_path = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip("needs a system Chromium and chromedriver (Debian: apt-get install chromium chromium-driver); "
                    f"found browser={binary}, driver={driver_path}")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--lang=en-US"):
        opts.add_argument(arg)
    if not phone:
        opts.add_argument("--window-size=1100,1400")
    else:  # a phone's viewport (a plain window cannot be made this narrow: Chromium has a minimum width)
        opts.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": PHONE[0], "height": PHONE[1],
                                                                       "pixelRatio": 2.0, "touch": True}})
    # An explicit driver path: Selenium Manager would otherwise try to download one.
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)


def _shots_dir(tmp_path: Path) -> Path:
    d = Path(os.environ.get("CYCLEMASK_STUDY_SCREENSHOTS") or tmp_path / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


# Slow: a browser and a server in processes of their own (~4 s of CPU here, more in Chromium).
# test_study_app.py::test_a_participant_completes_the_study takes the same path through the app fast.
@pytest.mark.slow
def test_participant_completes_the_study_in_chromium(tmp_path):
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _browser(phone=True)
    desk = None
    real, gen = make_folders(tmp_path / "in", 6, 6)
    study_dir = tmp_path / "study"
    shots = _shots_dir(tmp_path)
    try:
        driver.set_page_load_timeout(120)  # hang guards
        # Polling while a page is being replaced can meet its old nodes ("node does not belong to
        # the document", a plain WebDriverException in Chromium 156): the next poll reads the new page.
        wait = WebDriverWait(driver, 60, ignored_exceptions=(WebDriverException,))
        with StudyServer(real, gen, study_dir, "--per-person", "6") as server:
            sources = image_sources(study_dir)
            driver.get(server.url + "/")
            assert "Real or generated?" in driver.find_element(By.TAG_NAME, "h1").text
            driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()   # consent not ticked: refused
            assert "/q" not in driver.current_url
            driver.find_element(By.NAME, "consent").click()
            driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

            expected_right = 0
            for i in range(6):
                wait.until(ec.text_to_be_present_in_element((By.CLASS_NAME, "progress"), f"Image {i + 1} of 6"))
                # Read the image in one script that finds it itself: an element found first can be
                # replaced by the page before the next call ("node does not belong to the document").
                natural_w, shown_w, src = wait.until(lambda d: d.execute_script(
                    "const i = document.querySelector('img.face');"
                    "return i && i.complete && i.naturalWidth"
                    " ? [i.naturalWidth, i.getBoundingClientRect().width, i.getAttribute('src')] : null"))
                assert natural_w == 256
                assert driver.execute_script("return window.innerWidth") == PHONE[0]
                assert 300 <= shown_w <= PHONE[0]
                # Nothing sticks out sideways on a phone.
                assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
                image_id = src.rsplit("/", 1)[1]
                truth = sources[image_id]
                answer = truth if i < 4 else ("generated" if truth == "real" else "real")   # 4 right, 2 wrong
                expected_right += answer == truth
                if i % 2 == 0:
                    driver.find_element(By.CSS_SELECTOR, f"input[name=confidence][value='{1 + i % 3}']").click()
                if i == 0:
                    driver.save_screenshot(str(shots / "question_phone.png"))
                driver.find_element(By.CSS_SELECTOR, f"button[value={answer}]").click()
            wait.until(ec.text_to_be_present_in_element((By.CLASS_NAME, "score"), "4 of 6"))
            assert expected_right == 4
            driver.back()                                   # the back button cannot reopen an answered image
            driver.refresh()
            assert "You judged 4 of 6" in driver.find_element(By.TAG_NAME, "body").text

            # The researcher reads the results on a desktop browser.
            desk = _browser(phone=False)
            desk.set_page_load_timeout(120)
            desk.get(server.results_url)
            WebDriverWait(desk, 60).until(ec.url_to_be(server.url + "/results"))   # the token leaves the address bar
            body = desk.find_element(By.TAG_NAME, "body").text
            assert "participants: 1 (1 finished), answers: 6" in body
            assert "overall error rate (wrong answers, real and generated together): 33.33 %" in body
            assert "the paper: 40.08 %" in body
            assert "P1 6 of 6 4 33 %" in body                              # participant row: answered, score, error
            plot = desk.find_element(By.CSS_SELECTOR, "img.plot")
            WebDriverWait(desk, 60).until(
                lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", plot))
            desk.set_window_size(1100, desk.execute_script("return document.documentElement.scrollHeight") + 120)
            desk.save_screenshot(str(shots / "results.png"))
            print(f"\nscreenshots: {shots / 'question_phone.png'} and {shots / 'results.png'}")
            assert server.stop() == 0
    finally:
        driver.quit()
        if desk is not None:
            desk.quit()
    for name in ("question_phone.png", "results.png"):
        assert (shots / name).stat().st_size > 10_000
