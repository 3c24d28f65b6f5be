"""The MLflow and Airflow UIs as users see them: headless Chromium, driven through Selenium,
waits for what a page should show and saves a screenshot of it under outputs/ui/.

Every check takes the UI's address (and credentials), never how its server was started, so
the same checks run against a local `mlproject server` and `airflow standalone` or against the
compose stack. The UIs are single-page apps that render late: every wait is an explicit
WebDriverWait with a generous timeout, and a check that times out says what it did not see
and saves the page as `<name>-failed.png`.

Importable as `ui_browser` from the tests of this folder. Needs `selenium` (extra `dev`) and
Debian's `chromium` and `chromium-driver`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

from helpers import REPO

CHROMIUM = os.environ.get("MLPROJECT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MLPROJECT_CHROMEDRIVER", "/usr/bin/chromedriver")
# Without the background-networking flags, Chromium on a closed network hangs on refused
# connections (component updates, sync, field trials) before it renders anything.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1600,1000")
SCREENSHOTS = REPO / "outputs" / "ui"
TIMEOUT_S = 120.0  # single-page apps on a busy machine: seconds to render, more to poll a store

# MLflow 3.17: the experiment-kind switch at the top left; `machine_learning` is "Model training".
TRAINING_VIEW = "workflowType=machine_learning"
# The expand button of a parent run's row in MLflow's runs table (its run-name cell).
EXPAND_CHILDREN = "button[data-component-id*='runnamecellrenderer']"


def missing() -> str | None:
    """Why the browser checks cannot run here (None when they can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (apt-get install -y {package})"
    return None


@contextlib.contextmanager
def browser() -> Iterator:
    """A headless Chromium with a fresh profile (so no view or login is remembered from before)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="mlproject-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def basic_auth(driver, user: str, password: str) -> None:
    """Send HTTP basic credentials with every request of this browser (a tracking server run with
    `--auth` asks for them): Chromium's DevTools protocol sets the header, as no login page exists."""
    import base64

    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})


def screenshot(driver, name: str) -> Path:
    """The page as `outputs/ui/<name>.png`."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def open_page(driver, url: str) -> None:
    """Load `url` as a new document. Both UIs route by the address's #fragment or history: going
    from one of their pages to another is no page load, and the old page's links would still be
    found (and clicked) while the new one renders."""
    driver.get("about:blank")
    driver.get(url)


def page_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def wait_until(driver, name: str, what: str, condition: Callable, timeout: float = TIMEOUT_S):
    """`condition(driver)`'s first truthy value within `timeout` s; else the page is saved as
    `<name>-failed.png` and an AssertionError says `what` was not seen, and where."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5).until(condition)
    except TimeoutException:
        shot = screenshot(driver, f"{name}-failed")
        raise AssertionError(f"{name}: {what} not seen in {timeout:.0f} s at {driver.current_url} "
                             f"(page saved as {shot}; it shows: {page_text(driver)[:600]!r})") from None


def wait_for_texts(driver, name: str, texts: Sequence[str], timeout: float = TIMEOUT_S) -> None:
    """Wait until the page shows every one of `texts`."""
    def shown(d) -> bool:
        body = page_text(d)
        return all(text in body for text in texts)

    wait_until(driver, name, f"all of {list(texts)}", shown, timeout)


def _xpath_literal(text: str) -> str:
    return f"'{text}'" if "'" not in text else f'"{text}"'


def _link(text: str):
    """A condition: the visible link whose text is exactly `text`."""
    from selenium.webdriver.common.by import By

    def found(d):
        links = d.find_elements(By.XPATH, f"//a[normalize-space()={_xpath_literal(text)}]")
        return next((link for link in links if link.is_displayed()), False)

    return found


# ----------------------------------------------------------------------------- MLflow

def mlflow_landing(driver, base_url: str, experiment_name: str) -> str:
    """Open experiment `experiment_name` from MLflow's experiment list as a first-time visitor
    does (no view chosen yet) and return the address it lands on. The suite's experiments carry
    `mlflow.experimentKind` = `custom_model_development`: the page offers "Training runs" in its
    navigation (checked here). Saves `mlflow-landing.png`. Call it before any check that picks
    the model-training view: the browser remembers that choice."""
    open_page(driver, f"{base_url.rstrip('/')}/#/experiments")
    wait_until(driver, "mlflow-landing", f"a link to experiment {experiment_name!r}", _link(experiment_name)).click()
    wait_until(driver, "mlflow-landing", "the experiment's page",
               lambda d: re.search(r"#/experiments/[^/?]+/", d.current_url))
    wait_until(driver, "mlflow-landing", "a 'Training runs' link", _link("Training runs"))
    screenshot(driver, "mlflow-landing")
    return driver.current_url


def check_mlflow_experiment(driver, base_url: str, experiment_name: str, parent_name: str,
                            child_names: Sequence[str], shot: str = "mlflow-experiment") -> str:
    """MLflow's experiment page, opened from the experiment list after picking "Model training"
    in the UI's GenAI / Model training switch (as the docs tell users to), lists the run
    `parent_name` and, once its row is expanded as a user does, its nested runs `child_names`. Saves `<shot>.png`;
    returns the page's address."""
    from selenium.webdriver.common.by import By

    open_page(driver, f"{base_url.rstrip('/')}/#/experiments")
    switch = "//*[@role='button'][normalize-space()='Model training']"
    wait_until(driver, shot, "the 'Model training' switch", lambda d: d.find_elements(By.XPATH, switch))[0].click()
    wait_until(driver, shot, f"a link to experiment {experiment_name!r}", _link(experiment_name)).click()
    wait_until(driver, shot, "the experiment's runs", lambda d: re.search(r"#/experiments/[^/?]+/runs", d.current_url))
    parent = f"//*[@role='row'][.//*[normalize-space(text())={_xpath_literal(parent_name)}]]"

    def expand_button(d):
        buttons = d.find_elements(By.XPATH, f"{parent}//button[contains(@data-component-id, 'runnamecellrenderer')]")
        return buttons[0] if buttons else False

    wait_until(driver, shot, f"the run {parent_name!r} with an expand button", expand_button).click()
    wait_for_texts(driver, shot, [parent_name, *child_names])
    screenshot(driver, shot)
    return driver.current_url


def check_mlflow_child(driver, base_url: str, run_id: str, metric_names: Sequence[str],
                       registered_model: str, shot: str = "mlflow-child") -> str:
    """A run's page (its Overview, in the model-training view) shows the metrics `metric_names`
    and, under "Registered models", a link to a version of `registered_model`. Saves `<shot>.png`."""
    from selenium.webdriver.common.by import By

    open_page(driver, f"{base_url.rstrip('/')}/#/runs/{quote(run_id)}?{TRAINING_VIEW}")
    wait_for_texts(driver, shot, [run_id, "Metrics", *metric_names])
    section = "//*[normalize-space(text())='Registered models']"
    # the link names the model and its version ("ui-gpt v1") and opens the version's page
    href = f"#/models/{quote(registered_model)}/versions/"
    model = f"{section}/following::a[starts-with(@href, {_xpath_literal(href)})]"
    wait_until(driver, shot, f"registered model {registered_model!r} under 'Registered models'",
               lambda d: d.find_elements(By.XPATH, model))
    screenshot(driver, shot)
    return driver.current_url


# ----------------------------------------------------------------------------- Airflow

def airflow_login(driver, base_url: str, user: str, password: str) -> None:
    """Sign in on the simple auth manager's login page, when Airflow's UI shows it (a deployment
    where everyone is admin shows none)."""
    from selenium.webdriver.common.by import By

    open_page(driver, f"{base_url.rstrip('/')}/")
    form_or_app = wait_until(driver, "airflow-login", "the login form or the UI",
                             lambda d: d.find_elements(By.NAME, "username") or d.find_elements(By.LINK_TEXT, "Dags"))
    if form_or_app[0].get_attribute("name") != "username":
        return
    driver.find_element(By.NAME, "username").send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_until(driver, "airflow-login", f"the UI after signing in as {user!r}",
               lambda d: "/auth/login" not in d.current_url and not d.find_elements(By.NAME, "password"))


def _mapped_totals(driver) -> dict[str, int]:
    """{state: count} of a mapped task's page summary ("Total Success 4", "Total Running 2", ...)."""
    return {state: int(count) for state, count in re.findall(r"^Total (\w[\w ]*)\n(\d+)$", page_text(driver), re.M)}


def check_airflow_dag_run(driver, base_url: str, dag_id: str, run_id: str, user: str, password: str,
                          mapped_task: str = "compare__train", expected_mapped: int | None = None,
                          shot: str = "airflow-dag-run") -> dict[str, int]:
    """Airflow's UI (signed in as `user`) shows DAG run `run_id` as successful, and the page of
    its mapped task `mapped_task` counts all its map indexes (`expected_mapped` of them, when
    given) as Success and none in another state. Saves `<shot>.png` (the run's page) and
    `<shot>-mapped.png`; returns the page's {state: count}."""
    airflow_login(driver, base_url, user, password)
    run_page = f"{base_url.rstrip('/')}/dags/{quote(dag_id)}/runs/{quote(run_id)}"
    open_page(driver, run_page)
    wait_for_texts(driver, shot, [dag_id, run_id, mapped_task, "Success"])
    # the run's header: its id, then its state
    header = re.compile(rf"^{re.escape(run_id)}\nSuccess$", re.M)
    wait_until(driver, shot, f"the run {run_id!r} in state Success", lambda d: header.search(page_text(d)))
    screenshot(driver, shot)

    open_page(driver, f"{run_page}/tasks/{quote(mapped_task)}/mapped")

    def all_succeeded(d):
        totals = _mapped_totals(d)
        done = set(totals) == {"Success"} and totals["Success"] == (expected_mapped or totals["Success"])
        return totals if done else False

    totals = wait_until(driver, f"{shot}-mapped", f"every mapped {mapped_task} task instance in state Success",
                        all_succeeded)
    screenshot(driver, f"{shot}-mapped")
    return totals
