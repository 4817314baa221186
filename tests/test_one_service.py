"""One service (`assistant serve`): the chat app and the OpenAI-compatible API in one process on one data
directory, started as a user would, with three named users (alice, bob, an admin). Headless Chromium logs
in as alice and bob while the `openai` client asks as alice and bob; documents are uploaded from the
browser and over HTTP, and a private upload is cited for its owner only: never for another user, by doc
id, by a filter trick, through the compare mode, the document list, its job or a removal."""
from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from helpers.services import running, service_env

pytestmark = [pytest.mark.engine, pytest.mark.browser]
CHROMIUM = "/usr/bin/chromium"
USERS = {"alice": {"password": "alice-pw", "api_keys": ["alice-key"]},
         "bob": {"password": "bob-pw", "api_keys": ["bob-key"]},
         "root": {"password": "root-pw", "api_keys": ["root-key"], "admin": True}}
ALICE_DOC = ("Acme Cloud privacy addendum\n\nAcme Cloud keeps the server access logs of its customers for 37 days, "
             "after which the logs are deleted from every data centre.\n")
ALICE_QUESTION = "How long does Acme Cloud keep server access logs?"
BOB_DOC = ("Globex Travel privacy notice\n\nGlobex Travel shares the passport numbers of travellers only with the "
           "airline that issues the ticket.\n")
BOB_QUESTION = "Who does Globex Travel share passport numbers with?"
POLICY_QUESTION = "Does the website share personal information with third parties for marketing?"


@pytest.fixture(scope="module")
def service(tmp_path_factory, prepared, settings, platform):
    """`assistant serve --domain legal` on its own data directory (a copy of the session's legal index)."""
    home = tmp_path_factory.mktemp("one-service")
    platform.store.flush("legal")
    shutil.copytree(settings.data_dir / "index" / "legal", home / "index" / "legal",
                    ignore=shutil.ignore_patterns(".lock"))
    env = service_env(home, prepared) | {"ASSISTANT_USERS": json.dumps(USERS)}
    with running(["-m", "assistant", "serve", "--domain", "legal"], env, home / "serve.log", "/health") as (
            _, base, _children):
        yield base, home


def client(base: str, key: str):
    from openai import OpenAI

    return OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=300)


def ask(base: str, key: str, question: str, **extra):
    """(answer text, cited doc ids) from the openai client; `extra` goes into the body (filter, rag...)."""
    done = client(base, key).chat.completions.create(model="legal", messages=[{"role": "user", "content": question}],
                                                     extra_body=extra or None)
    body = done.model_dump()
    return body["choices"][0]["message"]["content"], [c["doc_id"] for c in body["citations"]]


def api(base: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=300)


def wait_job(http: httpx.Client, job_id: str, timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = http.get(f"/v1/domains/legal/documents/jobs/{job_id}").json()["job"]
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test.sh installs chromium with apt-get")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=300_000)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def logged_in(browser, base: str, user: str):
    from playwright.sync_api import expect

    page = browser.new_context(viewport={"width": 1280, "height": 1800}).new_page()
    page.set_default_timeout(300_000)
    page.goto(f"{base}/")
    page.locator("input[type=text], input:not([type])").first.fill(user)
    page.locator("input[type=password]").fill(USERS[user]["password"])
    page.get_by_role("button", name="Login").click()
    expect(page.locator("#legal-chat")).to_be_visible()
    return page


def chat_in(page, question: str, turn: int = 1):
    from playwright.sync_api import expect

    page.locator("#legal-question textarea").fill(question)
    page.locator("#legal-ask").click()
    expect(page.locator("#legal-chat [data-testid=bot]")).to_have_count(turn)
    expect(page.locator("#legal-ask")).to_be_enabled()
    return page.locator("#legal-chat [data-testid=bot]").nth(turn - 1).inner_text()


def test_the_app_and_the_api_answer_at_once_from_one_process(service, browser):
    base, _ = service
    health = httpx.get(f"{base}/health").json()
    assert health["engine"] == "alive"
    api_answer = {}

    def from_api():
        api_answer["reply"] = ask(base, "bob-key", POLICY_QUESTION)

    page = logged_in(browser, base, "alice")
    thread = threading.Thread(target=from_api)
    thread.start()  # the API question and the browser question are in flight together
    shown = chat_in(page, POLICY_QUESTION)
    thread.join(timeout=600)
    assert shown.strip() and api_answer["reply"][0].strip()
    page.locator("#legal-up").click()  # rated in the browser: the line records who rated
    from playwright.sync_api import expect

    expect(page.locator("#legal-thanks")).to_contain_text("saved")
    assert httpx.get(f"{base}/v1/models").status_code == 401  # the API still wants a key next to the app
    assert client(base, "bob-key").models.list().data[0].id == "legal"
    page.context.close()


def test_a_browser_upload_is_cited_for_its_owner_and_for_no_one_else(service, browser, tmp_path):
    from playwright.sync_api import expect

    base, home = service
    upload = tmp_path / "acme-addendum.md"
    upload.write_text(ALICE_DOC)
    broken = tmp_path / "scan.pdf"
    broken.write_bytes(b"%PDF-1.4 not really a pdf")
    alice = logged_in(browser, base, "alice")
    alice.locator("#legal-docs").get_by_text("Documents").first.click()
    alice.locator("#legal-files input[type=file]").set_input_files([str(upload), str(broken)])
    alice.locator("#legal-upload").click()
    report = alice.locator("#legal-upload-report")
    expect(report).to_contain_text("1 of 2 file(s) indexed")
    expect(report).to_contain_text("upload/alice/acme-addendum.md")
    expect(report).to_contain_text("scan.pdf")  # the bad file's own error; the good one is indexed
    expect(alice.locator("#legal-doc-list")).to_contain_text("upload/alice/acme-addendum.md")
    doc_id = "upload/alice/acme-addendum.md"
    assert (home / "uploads" / "legal" / "alice" / "acme-addendum.md").read_text() == ALICE_DOC

    # alice, in the browser and over the API: cited, with the fact
    reply = chat_in(alice, ALICE_QUESTION)
    assert "37 days" in reply, reply
    expect(alice.locator("#legal-citations")).to_contain_text("after which the logs are deleted")
    text, cited = ask(base, "alice-key", ALICE_QUESTION)
    assert doc_id in cited and "37 days" in text, (text, cited)

    # bob: never, however he asks
    for extra in ({}, {"filter": {"doc_id": doc_id}}, {"filter": {"owner": "alice"}},
                  {"filter": {"title": "acme-addendum"}}):
        text, cited = ask(base, "bob-key", ALICE_QUESTION, **extra)
        assert doc_id not in cited and "37 days" not in text, (extra, text, cited)
    with api(base, "bob-key") as http:
        assert doc_id not in http.get("/v1/domains/legal/documents").text
        assert http.delete(f"/v1/domains/legal/documents/{doc_id}").status_code == 404
        assert http.post("/v1/domains/legal/publish", json={"doc_id": doc_id}).status_code in (403, 404)
    bob = logged_in(browser, base, "bob")
    bob.locator("#legal-question textarea").fill(ALICE_QUESTION)
    bob.locator("#legal-compare").click()
    for i in range(4):
        expect(bob.locator(f"#legal-compare-{i}")).not_to_contain_text("generating", timeout=600_000)
    columns = " ".join(bob.locator(f"#legal-compare-{i}").inner_text() for i in range(4))
    assert "37 days" not in columns and "acme-addendum" not in columns.lower(), columns
    bob_reply = chat_in(bob, ALICE_QUESTION)
    assert "37 days" not in bob_reply
    citations = bob.locator("#legal-citations").inner_text()  # its header repeats the question, not the document
    assert "37 days" not in citations and "acme-addendum" not in citations, citations
    bob.locator("#legal-docs").get_by_text("Documents").first.click()
    expect(bob.locator("#legal-doc-list")).not_to_contain_text("acme-addendum")

    # the admin publishes it: now bob's answer cites it too
    with api(base, "root-key") as http:
        job = http.post("/v1/domains/legal/publish", json={"doc_id": doc_id})
        assert job.status_code == 202, job.text
        assert wait_job(http, job.json()["job"]["id"])["status"] == "done"
    deadline = time.time() + 60
    while time.time() < deadline:
        text, cited = ask(base, "bob-key", ALICE_QUESTION)
        if "upload/_public/acme-addendum.md" in cited:
            break
        time.sleep(1)
    assert "upload/_public/acme-addendum.md" in cited and "37 days" in text, (text, cited)
    for page in (alice, bob):
        page.context.close()


def test_http_uploads_report_per_file_and_stay_private(service):
    base, _ = service
    files = [("files", ("globex.txt", BOB_DOC.encode(), "text/plain")),
             ("files", ("empty.md", b"", "text/markdown")),
             ("files", ("tool.exe", b"MZ\x90\x00", "application/octet-stream"))]
    with api(base, "bob-key") as bob, api(base, "alice-key") as alice:
        accepted = bob.post("/v1/domains/legal/documents", files=files)
        assert accepted.status_code == 202, accepted.text
        job = wait_job(bob, accepted.json()["job"]["id"])
        assert job["status"] == "done" and job["files_done"] == 3 and len(job["errors"]) == 2, job
        by_name = {f["name"]: f for f in job["files"]}
        assert by_name["globex.txt"]["status"] == "indexed" and by_name["globex.txt"]["chunks"] >= 1
        assert "empty" in by_name["empty.md"]["error"] and "unsupported" in by_name["tool.exe"]["error"]
        assert alice.get(f"/v1/domains/legal/documents/jobs/{job['id']}").status_code == 404
        listed = bob.get("/v1/domains/legal/documents").json()
        assert "upload/bob/globex.txt" in [d["doc_id"] for d in listed["documents"]]
        assert listed["corpus"]["documents"] > 100
        text, cited = ask(base, "bob-key", BOB_QUESTION)
        assert "upload/bob/globex.txt" in cited and "airline" in text, (text, cited)
        text, cited = ask(base, "alice-key", BOB_QUESTION)
        assert "upload/bob/globex.txt" not in cited and "airline that issues" not in text
        assert bob.post("/v1/domains/nope/documents", files=files[:1]).status_code == 404
        assert bob.post("/v1/domains/legal/documents", data={"x": "1"}).status_code == 400  # no files
        gone = bob.delete("/v1/domains/legal/documents/upload/bob/globex.txt")
        assert gone.status_code == 200 and gone.json()["removed_chunks"] >= 1
        text, cited = ask(base, "bob-key", BOB_QUESTION)
        assert "upload/bob/globex.txt" not in cited
    assert httpx.post(f"{base}/v1/domains/legal/documents", files=files[:1]).status_code == 401


def test_feedback_names_its_user_and_only_an_admin_exports_it(service, browser):
    from playwright.sync_api import expect

    base, _ = service
    with api(base, "bob-key") as bob:
        assert bob.get("/v1/domains/legal/feedback").status_code == 403
    with api(base, "root-key") as root:
        lines = [json.loads(x) for x in root.get("/v1/domains/legal/feedback").text.splitlines()]
    assert lines and lines[-1]["user"] == "alice" and lines[-1]["rating"] == "up", lines
    admin = logged_in(browser, base, "root")
    admin.locator("#legal-docs").get_by_text("Documents").first.click()
    admin.locator("#legal-feedback-export").click()
    expect(admin.locator("#legal-feedback-file a")).to_be_visible()  # the download link of legal-feedback.jsonl
    assert "legal-feedback" in admin.locator("#legal-feedback-file").inner_text()
    admin.context.close()
    bob_page = logged_in(browser, base, "bob")
    bob_page.locator("#legal-docs").get_by_text("Documents").first.click()
    bob_page.locator("#legal-feedback-export").click()
    expect(bob_page.get_by_text("The feedback log is for admins.")).to_be_visible()
    bob_page.context.close()
