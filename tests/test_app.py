"""The web app in a real browser: Debian's headless Chromium driven by selenium, against `musicgen-remix app`
started by the test on the tiny weights."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from remixer import app as web
from remixer.request import EMPTY_PROMPT, INPUTS, UNSET
from remixer.testing.audio import write_song

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
FINAL_STATUS = ("Done in", "Could not remix:")
REMIX_BOUND_S = 300  # a 3 s song on the tiny weights takes ~15 s on 2 cores; the bound only stops a hang


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_weights, tmp_path_factory):
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("needs Debian's chromium and chromium-driver (./run.sh test installs them)")
    port = _free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    with open(log, "w") as out:
        # A 2 s heartbeat: a closed page is noticed (and its folder removed) within seconds, not 15.
        process = subprocess.Popen([sys.executable, "-m", "remixer", "app", "--port", str(port), "--weights-dir",
                                    str(tiny_weights), "--offline"], stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "GRADIO_HEARTBEAT_INTERVAL": "2"})
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until(lambda: urllib.request.urlopen(url, timeout=5).status == 200, 180, process, log)
        root = Path(re.search(r"uploads and outputs in (\S+)", log.read_text())[1])
        yield {"url": url, "log": log, "process": process, "root": root}
        # Every page is closed by now: each session's folder went with its page.
        _wait_until(lambda: not any((root / "sessions").iterdir()), 60)
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert not root.exists()  # stopped: uploads and outputs are gone


def _wait_until(ready, bound_s: float, process=None, log: Path | None = None) -> None:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the app exited: {log.read_text()[-3000:]}")
        try:
            if ready():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.5)
    raise AssertionError(f"not ready within {bound_s} s" + (f": {log.read_text()[-3000:]}" if log else ""))


@pytest.fixture
def browser(server):
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,2400"):
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    driver.set_script_timeout(60)
    driver.get(server["url"])
    _wait_until(lambda: driver.find_elements("css selector", "#remix"), 60)
    yield driver
    driver.quit()


def _css(driver, selector):
    return driver.find_element("css selector", selector)


def _remix(driver, song: Path, prompt: str = "jazz") -> str:
    """Upload, write the prompt, pick the small model, press Remix; the status line once it is set."""
    for clear in driver.find_elements("css selector", "#song button[aria-label=Clear]"):
        clear.click()  # the previous upload goes; the drop zone comes back
    _wait_until(lambda: driver.find_elements("css selector", "#song input[type=file]"), 30)
    _css(driver, "#song input[type=file]").send_keys(str(song))
    _wait_until(lambda: song.stem in _css(driver, "#song").text.split("\n"), 60)  # the upload is listed
    box = _css(driver, "#input-prompt textarea")
    box.clear()
    box.send_keys(prompt)
    _css(driver, "#input-model_version input").click()
    # The chosen option is listed with a check mark before its name.
    next(e for e in driver.find_elements("css selector", "ul li") if e.text.split("\n")[-1].strip() == "chord").click()
    before = _css(driver, "#status").text
    _css(driver, "#remix").click()
    # While it runs the status box shows Gradio's progress ("processing | 1.2s"); then the result's line.
    _wait_until(lambda: _css(driver, "#status").text != before and _css(driver, "#status").text.startswith(
        FINAL_STATUS), REMIX_BOUND_S)
    return _css(driver, "#status").text


def _decoded_duration(driver, href: str) -> float:
    """The browser fetches the file and decodes it with its own audio decoder: it plays."""
    return driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(arguments[0]).then(r => r.arrayBuffer())
          .then(b => new OfflineAudioContext(1, 1, 32000).decodeAudioData(b))
          .then(a => done(a.duration)).catch(e => done(-1));""", href)


def _value_of(driver, spec) -> object:
    element = _css(driver, f"#input-{spec.name}")
    if spec.type is bool:
        return element.find_element("css selector", "input[type=checkbox]").is_selected()
    field = element.find_elements("css selector", "input[type=number]") or \
        element.find_elements("css selector", "textarea") or element.find_elements("css selector", "input")
    return field[0].get_attribute("value")


def test_the_page_shows_every_input_of_the_table_with_its_default(browser):
    _css(browser, "#advanced").click()  # the accordion opens
    for spec in INPUTS:
        if spec.name == "music_input":
            assert _css(browser, "#song input[type=file]")
            continue
        if spec.name == "keep":  # three check boxes, one per part of the song, none checked
            element = _css(browser, "#input-keep")
            boxes = element.find_elements("css selector", "input[type=checkbox]")
            assert len(boxes) == 3 and not any(box.is_selected() for box in boxes)
            assert all(part in element.text for part in ("drums", "bass", "other"))
            continue
        shown = _value_of(browser, spec)
        expected = web.page_default(spec)
        if spec.type is bool:
            assert shown is expected, spec.name
        elif expected is None and spec.type in (int, float):
            assert float(shown) == UNSET, (spec.name, shown)  # -1: unset, as the Cog API says it
        elif expected is None:
            assert shown in ("", None), (spec.name, shown)
        elif spec.type in (int, float):
            assert float(shown) == pytest.approx(float(expected)), (spec.name, shown)
        else:
            assert shown == str(expected), (spec.name, shown)
        assert spec.description[:40] in _css(browser, f"#input-{spec.name}").text, spec.name


def test_remix_from_the_browser_plays_and_shows_the_song(browser, tmp_path):
    song = write_song(tmp_path / "song.wav", 3.0)
    status = _remix(browser, song)
    assert status.startswith("Done in"), status
    links = {a.get_attribute("download"): a.get_attribute("href")
             for a in browser.find_elements("css selector", "#downloads a[download]")}
    assert {"remix.wav", "analysis.json", "analysis.png"} <= set(links), links
    player_link = _css(browser, "#remix-player a[download]").get_attribute("href")
    assert _decoded_duration(browser, player_link) == pytest.approx(3.0, abs=0.01)
    picture = _css(browser, "#picture img")
    _wait_until(lambda: browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth",
                                               picture), 30)
    assert browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]",
                                  picture) == [1600, 500]
    browser.save_screenshot(str(tmp_path / "result.png"))
    shot = tmp_path / "result.png"
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_a_bad_upload_shows_its_error_and_the_next_request_works(browser, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not a song\n" * 50)
    status = _remix(browser, bad)
    assert status.startswith("Could not remix:") and "not a readable audio file" in status, status
    assert "Traceback" not in browser.page_source
    good = write_song(tmp_path / "good.wav", 2.0)
    status = _remix(browser, good, prompt="reggae")
    assert status.startswith("Done in"), status
    href = _css(browser, "#remix-player a[download]").get_attribute("href")
    assert _decoded_duration(browser, href) == pytest.approx(2.0, abs=0.01)


# --- the page's logic without a browser ------------------------------------------------------------------


def test_takes_are_all_played_ranked_with_their_numbers_and_a_failure_says_why(tiny_remixer, tmp_path):
    """App.remix and what the page shows, on the tiny weights: two takes give two players (the chosen one
    marked) and a table row each; an error is one line; closing the session removes its folder."""
    page = web.App(tiny_remixer, tmp_path)
    song = write_song(tmp_path / "song.wav", 1.5)
    texts = []
    done = page.remix("s1", str(song), {"prompt": "jazz", "model_version": "chord", "seed": 4, "takes": 2},
                      lambda fraction, text: texts.append(text))
    assert done["error"] is None and len(done["result"].takes) == 2
    shown = web._shown(done, web.MAX_TAKE_PLAYERS, len(web.STEMS))
    status, remix, table, *rest = shown
    players = rest[:web.MAX_TAKE_PLAYERS]
    assert status.startswith("Done in") and remix == str(done["result"].remix)
    # Random All-In-One finds no beat: the page says why beats have no number, as the CLI does.
    assert "beat_f n/a" in status and "no beats were found in the song" in status.partition("(n/a: ")[2], status
    visible = [p for p in players if p.get("visible")]
    assert len(visible) == 2 and "(chosen)" in visible[0]["label"] and "(chosen)" not in visible[1]["label"]
    assert visible[0]["value"] == str(done["result"].remix)
    assert table.count("\n| ") == 2 and "| 1 (chosen) | 1 |" in table  # a row per take, under the header
    assert any(t.startswith("generating: ") for t in texts) and any(t.startswith("separate ") for t in texts)
    failed = page.remix("s1", str(song), {"prompt": " ", "model_version": "chord"}, lambda *_: None)
    assert failed["error"] == EMPTY_PROMPT
    assert web._shown(failed, 4, 4)[0].startswith("**Could not remix:**")
    assert (tmp_path / "sessions" / "s1").is_dir()
    page.close("s1")
    assert not (tmp_path / "sessions" / "s1").exists()


def test_cancel_stops_the_remix_at_its_next_generation_step(tiny_remixer, tmp_path):
    """The Cancel button's flag, set while generating: the request ends with its message, no output kept."""
    page = web.App(tiny_remixer, tmp_path)
    song = write_song(tmp_path / "song.wav", 1.5)
    session = page.session("s2")

    def press_cancel(fraction, text):
        if text.startswith("generating"):
            session.cancel.set()

    done = page.remix("s2", str(song), {"prompt": "jazz", "model_version": "chord", "seed": 1}, press_cancel)
    assert done["error"] == "cancelled: the remix was stopped"
    assert not any((tmp_path / "sessions" / "s2").iterdir())
    again = page.remix("s2", str(song), {"prompt": "jazz", "model_version": "chord", "seed": 1}, lambda *_: None)
    assert again["error"] is None  # the flag is cleared for the next request


def test_keep_check_boxes_reach_the_request_and_the_page_offers_the_kept_stem_and_the_midi(tiny_remixer, tmp_path):
    """The keep check boxes give a list; the page turns it into the request's keep; the stem slot shows the
    song's own drums (so labelled) and the downloads include song.mid."""
    page = web.App(tiny_remixer, tmp_path)
    song = write_song(tmp_path / "song.wav", 1.5)
    values = {"prompt": "jazz", "model_version": "chord", "seed": 4,
              **web._clean({"keep": ["drums"], "return_midi": True, "return_stems": True})}
    assert values["keep"] == "drums"
    done = page.remix("s2", str(song), values, lambda *_: None)
    assert done["error"] is None, done["error"]
    result = done["result"]
    assert list(result.stems)[0] == "song_drums" and result.midi.name == "song.mid"
    shown = web._shown(done, web.MAX_TAKE_PLAYERS, len(web.STEMS))
    stems = shown[3 + web.MAX_TAKE_PLAYERS:3 + web.MAX_TAKE_PLAYERS + len(web.STEMS)]
    assert stems[0]["label"] == "song drums" and stems[0]["value"] == str(result.stems["song_drums"])
    assert str(result.midi) in shown[-1]
    assert web._clean({"keep": []})["keep"] is None
