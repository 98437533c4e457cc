"""The page in headless Chromium (Debian's chromium and chromium-driver, through Selenium):
MNIST test digits drawn on the canvas as pen strokes, by mouse and by touch, must come back as
their labels; a short training run from the panel must draw its curve and replace the model; a
second tab follows the same run. Saves a screenshot and the predict round-trip times measured
in the page (FASTNN_DEMO_SCREENSHOT / FASTNN_DEMO_REPORT name where; a temporary folder
otherwise).

In CI (.ci/run sets FASTNN_CI=1, and installs the browser when absent) a missing browser
fails this test; elsewhere it is skipped with the reason.
"""

import json
import os
import shutil
import statistics

import numpy as np
import pytest

from fastnn.demo.training import STEP_EVENTS_PER_EPOCH

DIGITS = 10
SCALE = 10  # canvas pixels per MNIST pixel: the 280x280 canvas holds the 28x28 digit
# MNIST pixels at least this dark are traced; the page's 20-pixel pen fattens each run by a
# pixel, about the grey fringe left out
TRACE_THRESHOLD = 128


def _find(names, fallback):
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return fallback if os.path.exists(fallback) else None


def _browser_or_reason():
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None, None, "selenium is not installed (pip install '.[test]')"
    chromium = _find(("chromium", "chromium-browser", "google-chrome"), "/usr/bin/chromium")
    driver = _find(("chromedriver",), "/usr/bin/chromedriver")
    if chromium is None or driver is None:
        return (
            None,
            None,
            (
                "Chromium and its driver are not installed (Debian: apt-get install "
                "chromium chromium-driver)"
            ),
        )
    return chromium, driver, None


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path, reason = _browser_or_reason()
    if reason:
        if os.environ.get("FASTNN_CI"):
            pytest.fail(f"the browser test must run in CI: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1500,1150",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_script_timeout(120)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _runs(digit):
    """Horizontal runs of dark pixels: (row, first column, last column)."""
    runs = []
    for r, row in enumerate(digit >= TRACE_THRESHOLD):
        c = 0
        while c < 28:
            if row[c]:
                start = c
                while c + 1 < 28 and row[c + 1]:
                    c += 1
                runs.append((r, start, c))
            c += 1
    return runs


def _trace(driver, canvas, digit, touch=False):
    """Draw `digit` on the canvas: one pen stroke along each run of dark pixels, by mouse (or
    by a finger), through the browser's own input pipeline."""
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    pointer = PointerInput(
        interaction.POINTER_TOUCH if touch else interaction.POINTER_MOUSE,
        "finger" if touch else "mouse",
    )
    actions = ActionBuilder(driver, mouse=pointer, duration=0)
    half = canvas.size["width"] / 2
    scale = canvas.size["width"] / (28 * SCALE)  # CSS pixels per canvas pixel
    for r, c0, c1 in _runs(digit):
        y = (r * SCALE + SCALE / 2) * scale - half
        x0 = (c0 * SCALE + SCALE / 2) * scale - half
        x1 = (c1 * SCALE + SCALE / 2) * scale - half
        actions.pointer_action.move_to(canvas, round(x0), round(y))
        actions.pointer_action.pointer_down()
        actions.pointer_action.move_to(canvas, round(x1), round(y))
        actions.pointer_action.pointer_up()
    actions.perform()


def _settled_prediction(driver):
    driver.execute_async_script("window.fastnnDemo.whenIdle().then(arguments[0]);")
    return driver.find_element("id", "prediction").text


def _wait(driver, condition, timeout=120, what=""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: condition(d), message=what
    )


def _fill(driver, **fields):
    for field, value in fields.items():
        element = driver.find_element("id", field)
        element.clear()
        element.send_keys(value)


def _artifact(env, tmp_path, name):
    path = os.environ.get(env)
    return path if path else str(tmp_path / name)


def test_page_in_headless_chromium(browser, start_server, default_served, mnist_test, tmp_path):
    driver = browser
    client = start_server(default_served)
    driver.get(client.url + "/")
    _wait(
        driver,
        lambda d: d.find_element("id", "model-info").get_attribute("data-version"),
        what="the page shows the served model",
    )
    canvas = driver.find_element("id", "draw")
    x, y = mnist_test

    # ten test digits, the last one by touch
    correct, seen = 0, []
    for k in range(DIGITS):
        driver.find_element("id", "clear").click()
        assert driver.find_element("id", "prediction").text == ""
        _trace(driver, canvas, x[k], touch=(k == DIGITS - 1))
        shown = _settled_prediction(driver)
        seen.append((int(y[k]), shown))
        correct += shown == str(y[k])
    assert correct >= 9, f"(label, shown) pairs: {seen}"
    bars = [
        float(
            driver.find_element("css selector", f"#bar-{d} .fill")
            .value_of_css_property("width")
            .rstrip("px")
        )
        for d in range(10)
    ]
    assert int(np.argmax(bars)) == int(seen[-1][1])
    preview = driver.execute_script(
        "return Array.from(document.getElementById('input').getContext('2d')"
        ".getImageData(0, 0, 28, 28).data.filter((v, i) => i % 4 === 0));"
    )
    assert 50 < sum(v > 0 for v in preview) < 500  # the 28x28 input is shown
    assert len(driver.find_elements("css selector", "#activations canvas.dense")) == 2

    # predict round trip from the page: fetch() to parsed JSON, with activations, sequentially
    times = driver.execute_async_script("""
        const done = arguments[0], times = [];
        (async () => { for (let i = 0; i < 200; i++) {
            times.push((await window.fastnnDemo.predictDrawing()).ms); } done(times); })();""")
    while_drawing = driver.execute_script("return window.fastnnDemo.state.latencies;")
    report = {
        "digits_correct": correct,
        "digits": DIGITS,
        "pairs": seen,
        "predict_ms_median": statistics.median(times),
        "predict_ms_p99": float(np.percentile(times, 99)),
        "predict_ms_while_drawing_median": statistics.median(while_drawing),
        "predict_ms_while_drawing_p99": float(np.percentile(while_drawing, 99)),
        "requests_while_drawing": len(while_drawing),
    }

    # a long run from the panel, cancelled: the served model stays
    version = driver.find_element("id", "model-info").get_attribute("data-version")
    curve = driver.find_element("id", "curve")
    _fill(driver, hidden="32", epochs="50", limit="60000", **{"batch-size": "16"})
    driver.find_element("id", "train").click()
    _wait(
        driver,
        lambda d: int(curve.get_attribute("data-points")) > 0,
        what="the long run reports steps",
    )
    assert driver.find_element("id", "train").get_attribute("disabled")
    driver.find_element("id", "cancel").click()
    _wait(
        driver,
        lambda d: "cancelled" in d.find_element("id", "train-status").text,
        what="the run is cancelled",
    )
    assert driver.find_element("id", "model-info").get_attribute("data-version") == version
    assert not driver.find_element("id", "train").get_attribute("disabled")

    # a short training run from the panel
    _fill(driver, hidden="128,64", epochs="2", limit="20000", lr="0.1", **{"batch-size": "128"})
    driver.find_element("id", "train").click()
    _wait(
        driver,
        lambda d: int(curve.get_attribute("data-points")) > 0,
        what="the loss curve gets points while training",
    )
    _wait(
        driver,
        lambda d: (
            "done" in d.find_element("id", "train-status").text
            or "fail" in d.find_element("id", "train-status").text
        ),
        what="the run finishes",
    )
    assert "done" in driver.find_element("id", "train-status").text
    steps = -(-20000 // 128)
    every = max(1, steps // STEP_EVENTS_PER_EPOCH)
    assert int(curve.get_attribute("data-points")) == 2 * -(-steps // every)
    assert curve.get_attribute("data-epochs") == "2"
    _wait(
        driver,
        lambda d: d.find_element("id", "model-info").get_attribute("data-version") != version,
        what="the page switches to the new model",
    )
    assert "784-128-64-10" in driver.find_element("id", "model-info").text
    assert _settled_prediction(driver) in "0123456789"
    _wait(
        driver,
        lambda d: "64" in d.find_elements("css selector", "#activations figcaption")[-1].text,
        what="the new model's hidden layers are drawn",
    )

    # more tabs than the browser's six connections to one server: each replays the finished
    # run and predicts on its own (a hidden tab lets go of its event stream)
    first = driver.current_window_handle
    for tab in range(7):
        driver.switch_to.new_window("tab")
        driver.get(client.url + "/")
        _wait(
            driver,
            lambda d: d.find_element("id", "curve").get_attribute("data-epochs") == "2",
            timeout=30,
            what=f"tab {tab + 2} replays the run",
        )
    _trace(driver, driver.find_element("id", "draw"), x[0])
    assert _settled_prediction(driver) == str(y[0])
    for handle in driver.window_handles:
        if handle != first:
            driver.switch_to.window(handle)
            driver.close()
    driver.switch_to.window(first)

    # the picture for the README: a digit, its input, bars, activations and the curve
    driver.find_element("id", "clear").click()
    _trace(driver, canvas, x[0])
    _settled_prediction(driver)
    screenshot = _artifact("FASTNN_DEMO_SCREENSHOT", tmp_path, "demo.png")
    assert driver.find_element("tag name", "body").screenshot(screenshot)
    report["screenshot"] = screenshot
    with open(_artifact("FASTNN_DEMO_REPORT", tmp_path, "demo_report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print("\ndemo browser test:", json.dumps(report))
