"""The Gradio chat in a real browser: headless Debian Chromium driven by Playwright, app on a free
127.0.0.1 port over the session's real Platform (engine, index, embedder, domain adapters).

The 135M model is weak: these tests check the chat's structure (messages, streaming, citations, the
standalone-question line, Stop, New chat, compare, feedback), not whether the answers are right."""
from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from assistant.feedback import FeedbackLog

pytestmark = [pytest.mark.engine, pytest.mark.browser]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
# healthcare: a scored yes/no label, then the adapter's streamed reason and citation (manufacturing's adapter
# answers a free question with an option alone, uncited)
HEALTH_QUESTION = "Is there a relationship between obesity and asthma severity in children?"
FOLLOW_UPS = ["What about in adults?", "Does it also make their symptoms worse at night?"]  # need the history
QUESTION = "For electric motor, if a failure event rotor windings fault occurs, which sensor is the most relevant?"
# finance without retrieval or adapter: the base model writes freely up to max_tokens (128), long enough to stop
LONG_QUESTION = "Write a long, detailed essay about the history of banking, with many examples."
# Records every text the last assistant message shows, to prove the answer arrived in pieces (streamed).
WATCH = """(sel) => { window.__seen = []; const chat = document.querySelector(sel);
  new MutationObserver(() => { const bots = chat.querySelectorAll('[data-testid=bot]');
    if (bots.length) window.__seen.push(bots[bots.length - 1].innerText); }).observe(chat, {subtree: true,
  childList: true, characterData: true}); }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(platform, tmp_path_factory):
    from assistant.entrypoints.web import build_app, launch  # app.py's own names

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


def bots(page, name):
    return page.locator(f"#{name}-chat [data-testid=bot]")


def users(page, name):
    return page.locator(f"#{name}-chat [data-testid=user]")


def open_tab(page, title, name):
    """The tab, with a fresh chat and both switches on (the page is shared by the module's tests)."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name=title).click()
    page.locator(f"#{name}-new").click()
    expect(users(page, name)).to_have_count(0)
    for switch in ("rag", "lora"):
        page.locator(f"#{name}-{switch} input").set_checked(True)


def send(page, name, question, turn):
    """Types and sends `question` as the chat's `turn`-th message; returns once the answer is finished."""
    from playwright.sync_api import expect

    page.locator(f"#{name}-question textarea").fill(question)
    page.locator(f"#{name}-ask").click()
    expect(users(page, name)).to_have_count(turn)  # shown at once, and Send is off until the answer is done
    expect(page.locator(f"#{name}-ask")).to_be_enabled()
    expect(page.locator(f"#{name}-stop")).to_be_disabled()
    expect(bots(page, name)).to_have_count(turn)
    return bots(page, name).nth(turn - 1)


def test_a_three_turn_conversation_streams_cites_and_shows_the_standalone_question(page):
    from playwright.sync_api import expect

    open_tab(page, "Healthcare", "healthcare")
    page.evaluate(WATCH, "#healthcare-chat")
    first = send(page, "healthcare", HEALTH_QUESTION, 1)
    assert first.inner_text().strip()
    seen = [s for s in page.evaluate("window.__seen") if s.strip()]
    assert len(set(seen)) >= 2, f"the answer did not stream: {seen}"
    assert "Searched for" not in first.inner_text()  # the first question is searched as it is
    expect(page.locator("#healthcare-meta")).to_contain_text("healthcare@")
    expect(page.locator("#healthcare-citations")).to_contain_text(HEALTH_QUESTION)  # the sources' question

    for turn, follow_up in enumerate(FOLLOW_UPS, start=2):
        page.evaluate(WATCH, "#healthcare-chat")
        answer = send(page, "healthcare", follow_up, turn)
        seen = [s for s in page.evaluate("window.__seen") if s.strip()]
        assert len(set(seen)) >= 2, f"turn {turn} did not stream: {seen}"
        # the follow-up was rewritten with the history into a standalone question for retrieval
        note = answer.locator(".turn-note").first
        expect(note).to_contain_text("Searched for:")
        expect(page.locator("#healthcare-citations")).to_contain_text(follow_up)
    expect(bots(page, "healthcare")).to_have_count(3)
    expect(users(page, "healthcare")).to_have_count(3)

    citation = page.locator("#healthcare-citations details.citation").first
    expect(citation).to_be_visible()
    title = citation.locator(".cite-title").inner_text().strip()
    doc = citation.locator(".cite-doc").inner_text().removeprefix("doc").strip()
    assert title and not title.replace(" ", "").isdigit() and title != doc, f"not a readable title: {title!r}"
    assert len(title.split()) >= 3, title  # PubMedQA has no titles: the passage's first words
    rel = citation.locator(".cite-rel").inner_text()
    assert re.search(r"#[1-9]\d* of [1-9]\d*", rel) and re.search(r"relevance \d{1,3}%", rel), rel
    assert not re.search(r"0\.0\d", rel), f"a raw fusion score is shown: {rel}"
    citation.locator("summary").click()  # expandable passage
    expect(citation.locator("blockquote")).to_be_visible()
    assert citation.locator("blockquote").inner_text().strip()
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "app.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_feedback_rates_the_last_answer_and_lands_in_the_jsonl(app, page):
    from playwright.sync_api import expect

    _, feedback = app
    open_tab(page, "Healthcare", "healthcare")
    before = len(feedback.read("healthcare"))
    send(page, "healthcare", HEALTH_QUESTION, 1)
    page.locator("#healthcare-comment textarea").fill("right answer")
    page.locator("#healthcare-up").click()
    expect(page.locator("#healthcare-thanks")).to_contain_text("saved")
    records = feedback.read("healthcare")
    assert len(records) == before + 1
    r = records[-1]
    assert r["rating"] == "up" and r["comment"] == "right answer" and r["question"] == HEALTH_QUESTION
    assert r["answer"].strip() and r["citations"] and r["adapter"].startswith("healthcare@") and r["time"]
    assert r["answer"].split()[0] in bots(page, "healthcare").first.inner_text()

    send(page, "healthcare", FOLLOW_UPS[0], 2)  # the last answer is now the follow-up's
    page.locator("#healthcare-down").click()
    expect(page.locator("#healthcare-thanks")).to_contain_text("(down) saved")
    r = feedback.read("healthcare")[-1]
    assert r["rating"] == "down" and r["question"] == FOLLOW_UPS[0] and r["standalone_question"]


def test_new_chat_clears_the_history_and_the_citations(page):
    from playwright.sync_api import expect

    open_tab(page, "Healthcare", "healthcare")
    send(page, "healthcare", HEALTH_QUESTION, 1)
    expect(page.locator("#healthcare-citations details.citation").first).to_be_visible()
    page.locator("#healthcare-new").click()
    expect(bots(page, "healthcare")).to_have_count(0)
    expect(users(page, "healthcare")).to_have_count(0)
    expect(page.locator("#healthcare-citations")).to_have_text("")
    expect(page.locator("#healthcare-meta")).to_have_text("")
    # the history is gone on the server too: the same follow-up is now a first question, not rewritten
    answer = send(page, "healthcare", FOLLOW_UPS[0], 1)
    assert "Searched for" not in answer.inner_text()
    expect(page.locator("#healthcare-citations")).not_to_contain_text(HEALTH_QUESTION)


def test_stop_cancels_the_generation_and_keeps_the_partial_answer(page, platform):
    from playwright.sync_api import expect

    open_tab(page, "Finance (annual reports)", "finance")
    for switch in ("rag", "lora"):
        page.locator(f"#finance-{switch} input").set_checked(False)
    page.locator("#finance-question textarea").fill(LONG_QUESTION)
    page.locator("#finance-ask").click()
    expect(page.locator("#finance-stop")).to_be_enabled()
    expect(page.locator("#finance-ask")).to_be_disabled()
    page.wait_for_function("() => { const b = document.querySelectorAll('#finance-chat [data-testid=bot]');"
                           " return b.length && b[b.length - 1].innerText.trim().length > 0; }",
                           polling="raf")
    page.locator("#finance-stop").click(timeout=20_000)  # at the first streamed piece: the answer runs 128 tokens
    answer = bots(page, "finance").last
    expect(answer).to_contain_text("(stopped)")
    expect(page.locator("#finance-ask")).to_be_enabled()  # Send works again, Stop is off
    expect(page.locator("#finance-stop")).to_be_disabled()
    expect(page.locator("#finance-meta")).to_contain_text("Stopped")
    partial = answer.inner_text().replace("(stopped)", "").strip()
    assert partial, "the partial answer was not kept"
    # the engine request was aborted: no tokens are generated any more and nothing is in flight
    deadline = time.time() + 10
    while platform.engine.in_flight and time.time() < deadline:
        time.sleep(0.1)
    assert platform.engine.in_flight == 0
    deltas, shown = platform.engine.deltas_generated, page.locator("#finance-chat").inner_text()
    time.sleep(3)
    assert platform.engine.deltas_generated == deltas, "the engine kept generating after Stop"
    assert page.locator("#finance-chat").inner_text() == shown, "the chat kept updating after Stop"

    # Send works again: the next turn is answered (with the stopped turn in its history)
    for switch in ("rag", "lora"):
        page.locator(f"#finance-{switch} input").set_checked(True)
    nxt = send(page, "finance", "What was the total sales in 2019?", 2)
    assert nxt.inner_text().strip() and "(stopped)" not in nxt.inner_text()


def test_empty_and_huge_questions_get_a_message_not_a_trace(app, page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Healthcare").click()
    count = users(page, "healthcare").count()
    box = page.locator("#healthcare-question textarea")
    box.fill("")
    page.locator("#healthcare-ask").click()
    expect(page.get_by_text("Please type a question.").first).to_be_visible()
    box.fill("why? " * 1000)
    page.locator("#healthcare-ask").click()
    expect(page.get_by_text("the limit is 4000").first).to_be_visible()
    assert "Traceback" not in page.content()
    assert users(page, "healthcare").count() == count  # nothing was added to the chat
    shown = page.get_by_text("the limit is 4000").count()
    page.locator("#healthcare-compare").click()  # compare checks the question the same way
    expect(page.get_by_text("the limit is 4000")).to_have_count(shown + 1)
    expect(page.locator("#healthcare-compare-0")).to_have_text("")


def test_compare_mode_shows_four_conditions_under_their_question(page):
    from playwright.sync_api import expect

    open_tab(page, "Manufacturing (condition monitoring)", "manufacturing")
    page.locator("#manufacturing-question textarea").fill(QUESTION)
    page.locator("#manufacturing-compare").click()
    expect(page.locator("#manufacturing-compare-question")).to_contain_text(QUESTION)
    for i, label in enumerate(["base", "+RAG", "+LoRA", "+RAG+LoRA"]):
        expect(page.locator(f"#manufacturing-compare-{i}")).to_contain_text(label)
    for i in range(4):
        expect(page.locator(f"#manufacturing-compare-{i}")).not_to_contain_text("generating")
    texts = [page.locator(f"#manufacturing-compare-{i}").inner_text() for i in range(4)]
    assert len(set(texts)) > 1  # the conditions differ
    expect(page.locator("#manufacturing-chat [data-testid=bot]")).to_have_count(0)  # compare is not a chat turn

    # a chat message clears the compare area: nothing on screen answers a question no longer shown
    send(page, "manufacturing", "Which sensor detects a bearing fault in an electric motor?", 1)
    expect(page.locator("#manufacturing-compare-question")).to_have_text("")
    for i in range(4):
        expect(page.locator(f"#manufacturing-compare-{i}")).to_have_text("")
