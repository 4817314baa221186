"""The Gradio app in a real browser: headless Debian Chromium driven by Playwright, app on a free
127.0.0.1 port over the session's real Platform (engine, index, embedder, domain adapters)."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from assistant.feedback import FeedbackLog

pytestmark = [pytest.mark.engine, pytest.mark.browser]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
# healthcare: a scored yes/no label, then the adapter's streamed reason and citation (manufacturing's adapter
# answers a free question with an option alone, uncited)
HEALTH_QUESTION = "Is there a relationship between obesity and asthma severity in children?"
QUESTION = "For electric motor, if a failure event rotor windings fault occurs, which sensor is the most relevant?"
# Records every text the answer element shows, to prove the answer arrived in pieces (streamed).
WATCH = """() => { window.__seen = []; const el = document.querySelector('#manufacturing-answer');
  new MutationObserver(() => window.__seen.push(el.innerText)).observe(el, {subtree: true, childList: true,
  characterData: true}); }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(platform, tmp_path_factory):
    from app import build_app, launch

    feedback = FeedbackLog(tmp_path_factory.mktemp("feedback"))
    demo = build_app(platform, feedback)
    port = free_port()
    launch(demo, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", feedback
    demo.close()


@pytest.fixture(scope="module")
def page(app):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test.sh installs chromium with apt-get")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=180_000)  # CPU generation: answers take seconds, not milliseconds
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.set_default_timeout(180_000)
        page.goto(app[0])
        yield page
        browser.close()


def test_ask_streams_a_cited_answer_and_feedback_lands_in_the_jsonl(app, page):
    from playwright.sync_api import expect

    _, feedback = app
    page.get_by_role("tab", name="Healthcare").click()
    page.locator("#healthcare-question textarea").fill(HEALTH_QUESTION)
    page.evaluate(WATCH.replace('#manufacturing-answer', '#healthcare-answer'))
    page.locator("#healthcare-ask").click()
    citation = page.locator("#healthcare-citations details.citation").first
    expect(citation).to_be_visible()
    expect(page.locator("#healthcare-meta")).to_contain_text("healthcare@")
    answer = page.locator("#healthcare-answer").inner_text().strip()
    assert answer
    seen = [s for s in page.evaluate("window.__seen") if s.strip()]
    assert len(set(seen)) >= 2, f"the answer did not stream: {seen}"
    citation.locator("summary").click()  # expandable passage
    expect(citation.locator("blockquote")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app.png"), full_page=True)

    page.locator("#healthcare-comment textarea").fill("right answer")
    page.locator("#healthcare-up").click()
    expect(page.locator("#healthcare-thanks")).to_contain_text("saved")
    records = feedback.read("healthcare")
    assert len(records) == 1
    r = records[0]
    assert r["rating"] == "up" and r["comment"] == "right answer" and r["question"] == HEALTH_QUESTION
    assert r["answer"].strip() and r["citations"] and r["adapter"].startswith("healthcare@") and r["time"]


def test_empty_and_huge_questions_get_a_message_not_a_trace(app, page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Healthcare").click()
    box = page.locator("#healthcare-question textarea")
    box.fill("")
    page.locator("#healthcare-ask").click()
    expect(page.get_by_text("Please type a question.").first).to_be_visible()
    box.fill("why? " * 1000)
    page.locator("#healthcare-ask").click()
    expect(page.get_by_text("the limit is 4000").first).to_be_visible()
    assert "Traceback" not in page.content()


def test_compare_mode_shows_four_conditions(app, page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Manufacturing (condition monitoring)").click()
    page.locator("#manufacturing-question textarea").fill(QUESTION)
    page.locator("#manufacturing-compare").click()
    for i, label in enumerate(["base", "+RAG", "+LoRA", "+RAG+LoRA"]):
        expect(page.locator(f"#manufacturing-compare-{i}")).to_contain_text(label)
    texts = [page.locator(f"#manufacturing-compare-{i}").inner_text() for i in range(4)]
    assert len(set(texts)) > 1  # the conditions differ
