"""The Gradio chat: one tab per domain, a thin layer over `assistant.Platform`. `assistant serve` mounts it
into the HTTP API's app (`mount`: one process, one engine, one store); `app.py` runs it alone (`launch`).

Each tab (title, description and example questions from the domain's `domain.toml`) is a chat. The history
lives in the browser session (a `gr.State` per tab) and every turn goes to `Platform.chat_stream` as
OpenAI-style messages, so a follow-up ("What about in adults?") is answered with the turns before it; the
answer streams into the chat, and when the platform rewrote the follow-up for retrieval a "Searched for: ..."
line under the answer shows the standalone question it searched with (and says when earlier turns did not
fit the prompt). **Stop** cancels the generation (Gradio cancels the streaming event and closes its
generator, which closes the platform stream and aborts the engine request); the partial answer stays, marked
as stopped. **New chat** clears the history, the citations and the compare columns.

Under the chat: the last answer's citations (a readable title: the document's title, or its first words when
the corpus has none or it is a bare id; the rank among the passages shown to the model and the relevance as a
share of the top passage's score; click to read the passage), the adapter version and the latency, and thumbs
up/down feedback with a comment on the last answer (`assistant/feedback.py`). Compare mode answers the
question in the box, standalone (no history), as base, +RAG, +LoRA and +RAG+LoRA side by side in one mixed
engine batch, under the question it answered.

Options: the passages shown to the model (k), and for domains whose questions are about one item (a
website's policy, a product: `retrieval.scope_qa_meta`) a picker that limits retrieval to that item.
Documents (an accordion per tab): upload files with a progress bar and a result per file, the uploads you may
see with their chunk counts, remove one, publish one to every user (admins); admins also download the
domain's feedback log. With logins (`users` setting or ASSISTANT_APP_PASSWORD, assistant/users.py) uploads
are private to their user, who alone retrieves them, and feedback records the user.

Element ids per tab (stable, used by tests/test_app.py), `{name}` the domain: `{name}-chat` (chatbot),
`{name}-question` (input), `{name}-ask` (send), `{name}-stop`, `{name}-new`, `{name}-rag`, `{name}-lora`,
`{name}-k`, `{name}-pick`, `{name}-citations`, `{name}-meta`, `{name}-comment`, `{name}-up`, `{name}-down`,
`{name}-thanks`, `{name}-compare` (button), `{name}-compare-question`, `{name}-compare-0` .. `{name}-compare-3`,
`{name}-docs` (accordion), `{name}-files`, `{name}-public`, `{name}-upload`, `{name}-upload-report`,
`{name}-doc-list`, `{name}-doc-pick`, `{name}-remove`, `{name}-publish`, `{name}-feedback-export`,
`{name}-feedback-file`.

    python app.py [--host 127.0.0.1] [--port 7860] [--domain healthcare ...]

Binds 127.0.0.1 unless told otherwise, never creates a share link, sends no analytics
(GRADIO_ANALYTICS_ENABLED=False, set by assistant.configure_environment).
"""
from __future__ import annotations

import argparse
import contextlib
import html
import re
import time

from assistant import (
    Answer,
    AssistantError,
    FeedbackError,
    FeedbackLog,
    Settings,
    check_question,
    configure_environment,
    error_info,
    is_admin,
    mapped_error_types,
    viewer,
)

configure_environment()  # offline, no analytics: before Gradio is imported
import gradio as gr  # noqa: E402

CONDITIONS = [("base", False, False), ("+RAG", True, False), ("+LoRA", False, True), ("+RAG+LoRA", True, True)]
TITLE_WORDS = 8  # a citation without a readable title is named by the first words of its passage
STOPPED = "*(stopped)*"  # marks a partial answer the user stopped
CSS = """
.citation summary { cursor: pointer; }
.citation .cite-rel, .citation .cite-doc { color: var(--body-text-color-subdued); }
.citations-for { margin-bottom: 0.25em; }
"""
_BARE_ID = re.compile(r"\S*\d\S*")           # one token with a digit: "21881325", "B00GZ1GUSY", "het-12"
_KIND_TITLES = {"table", "text", "paragraph", "passage", "document", "chunk"}  # a kind, not a title (TAT-QA)
_NOT_WORDS = re.compile(r"[|#*_`>\[\]]+")   # table rules and markdown marks, not words


def _first_words(text: str, n: int = TITLE_WORDS) -> str:
    words = _NOT_WORDS.sub(" ", text or "").split()
    return " ".join(words[:n]) + (" …" if len(words) > n else "")


def citation_title(c) -> str:
    """A title a reader can use: the document's own, unless it is empty, the doc id, a bare id (PubMed ids,
    ASINs) or only the passage's kind ("table"); then the passage's first words."""
    title = (c.title or "").strip()
    if title and title != c.doc_id and not (_BARE_ID.fullmatch(title) and not title.islower()) \
            and title.lower() not in _KIND_TITLES:
        return title
    words = _first_words(c.text) or c.doc_id
    return f"{title.capitalize()}: {words}" if title.lower() in _KIND_TITLES else words


def relevance(c, passages) -> str:
    """Rank among the passages shown to the model and the score as a share of the top one (fusion scores
    such as RRF's 0.033 mean nothing to a reader)."""
    scores = [p.score for p in passages] or [c.score]
    rank = 1 + sum(s > c.score for s in scores)
    top = max(scores)
    share = f" · relevance {100 * c.score / top:.0f}%" if top > 0 else ""
    return f"#{rank} of {len(scores)}{share}"


def citations_html(answer: Answer | None) -> str:
    if answer is None:
        return ""
    head = f"<p class='citations-for'><strong>Sources</strong> for “{html.escape(answer.question)}”</p>"
    if not answer.citations:
        reason = {"gate": "abstained: nothing retrieved is close enough to the question",
                  "model": "abstained: the model could not answer from the passages"}.get(
            answer.abstained_by or "", "no passage cited")
        return f"<div class='citations'>{head}<p class='no-citations'><em>No citations ({reason}).</em></p></div>"
    items = []
    for c in answer.citations:
        items.append(
            f"<details class='citation'><summary>[{c.n}] <span class='cite-title'>{html.escape(citation_title(c))}"
            f"</span> <small class='cite-rel'>({relevance(c, answer.passages)})</small> "
            f"<small class='cite-doc'>doc {html.escape(c.doc_id)}</small></summary>"
            f"<blockquote>{html.escape(c.text)}</blockquote></details>")
    return f"<div class='citations'>{head}{''.join(items)}</div>"


def _same(a: str, b: str) -> bool:
    return " ".join(a.lower().split()).rstrip("?") == " ".join(b.lower().split()).rstrip("?")


def turn_notes(answer: Answer) -> str:
    """The lines under an answer in the chat: the standalone question retrieval used when the follow-up was
    rewritten, and a note when earlier turns did not fit the prompt."""
    notes = []
    if answer.standalone_question and not _same(answer.standalone_question, answer.question):
        how = " (the latest questions + this one)" if answer.rewrite == "concatenated" else ""
        notes.append(f"Searched for: “{html.escape(answer.standalone_question)}”{how}")
    dropped = sum(int(f.split(":", 1)[1]) for f in answer.flags if f.startswith("history_dropped:"))
    if dropped:
        notes.append(f"{dropped} earlier message{'s' if dropped > 1 else ''} did not fit the prompt and "
                     f"{'were' if dropped > 1 else 'was'} left out")
    return "".join(f"\n\n<small class='turn-note'>{n}</small>" for n in notes)


def meta_line(answer: Answer, seconds: float) -> str:
    adapter = answer.adapter or "base model (no adapter)"
    flags = ", ".join(answer.flags) or "ok"
    if answer.choice and "label" in answer.choice:
        flags += f" · choice {answer.choice['label']!r} picked by scoring {len(answer.choice['scores'])} answers"
    elif answer.choice and "candidates" in answer.choice:  # an evidence answer: a span copied from a passage
        flags += f" · quoted: the closest of {answer.choice['candidates']} spans of the passages"
    condense = answer.timings.get("condense_ms")
    rewrite = f", rewrite {condense:.0f} ms" if condense is not None else ""
    return (f"Adapter: `{adapter}` · latency {seconds:.1f} s (retrieve {answer.timings.get('retrieve_ms', 0):.0f} ms"
            f"{rewrite}, first token {answer.timings.get('first_token_ms') or 0:.0f} ms) · {flags}")


def compare_column(label: str, answer: Answer) -> str:
    cites = "".join(f"[{c.n}] {citation_title(c)} ({relevance(c, answer.passages)})  \n" for c in answer.citations)
    return f"**{label}**\n\n{answer.text}\n\n{cites}"


SCOPE_NAMES = {"asin": "product", "site": "website"}  # what `scope_qa_meta` names, in words
UPLOAD_POLL_S = 0.3


def item_choices(platform, domain: str) -> list[tuple[str, str]]:
    """(label, title) of every item a scoped domain's corpus holds: the title, and its first words when the
    title is a bare id (an ASIN)."""
    firsts: dict[str, str] = {}
    for _, payload in platform.store.scan(domain, ["title", "text", "chunk", "origin"]):
        title = payload.get("title") or ""
        if title and payload.get("origin") is None and (title not in firsts or payload.get("chunk") == 0):
            firsts[title] = payload.get("text", "")
    return sorted(((f"{t}: {_first_words(x)}" if _BARE_ID.fullmatch(t) else t), t) for t, x in firsts.items())


def build_app(platform, feedback: FeedbackLog) -> gr.Blocks:
    max_chars = platform.settings.max_question_chars
    n_cols = len(CONDITIONS)
    library = platform.library

    def who(request: gr.Request | None):
        """The logged-in user (None without logins: the local user)."""
        return platform.users.login_user(getattr(request, "username", None) if request else None)

    def scope(domain: str, item: str | None) -> dict | None:
        return {"title": item} if item and platform.domain(domain).retrieval.scope_qa_meta else None

    def check(question: str) -> str:
        if not (question or "").strip():
            raise gr.Error("Please type a question.")
        try:
            return check_question(question, max_chars)
        except AssistantError as exc:
            raise gr.Error(f"That question is {len(question)} characters long; the limit is {max_chars}.") from exc

    def validate(question, turn=None):
        """Before any output changes: a refused question leaves the screen as it was (a message, no trace)."""
        if turn and not turn.get("done"):
            raise gr.Error("An answer is still being written: wait for it or press Stop.")
        check(question)

    def start(question, shown):
        """Send, step 1 (instant): show the question in the chat, clear what belonged to the last answer
        (citations, meta, compare columns) so nothing on screen answers another question."""
        question = check(question)
        shown = [*shown, {"role": "user", "content": question}]
        return ("", shown, shown, {"question": question, "text": "", "done": False}, None, "", "*searching...*", "",
                "", *[""] * n_cols, gr.update(interactive=False), gr.update(interactive=True))

    def respond_fn(domain: str):
        def respond(shown, history, turn, use_rag, use_lora, k, item, request: gr.Request):
            """Send, step 2: stream the answer to the conversation so far. Cancelled by Stop / New chat:
            Gradio closes this generator, which closes the platform stream (the engine aborts the request)."""
            if not turn or turn.get("done"):
                return
            messages = [*history, {"role": "user", "content": turn["question"]}]
            started = time.perf_counter()
            text, answer = "", None
            stream = platform.chat_stream(domain, messages, rag=use_rag, lora=use_lora, k=int(k),
                                          filter=scope(domain, item), user=viewer(who(request)))
            try:
                with contextlib.closing(stream):
                    for piece in stream:
                        if isinstance(piece, str):
                            text += piece
                            turn = {**turn, "text": text}
                            chat = [*shown, {"role": "assistant", "content": text}]
                            yield chat, chat, history, turn, gr.skip(), gr.skip(), "*generating...*"
                        else:
                            answer = piece
            except mapped_error_types() as exc:
                message = error_info(exc).message
                chat = [*shown, {"role": "assistant", "content": f"**Error:** {html.escape(message)}"}]
                yield chat, chat, history, {**turn, "done": True}, gr.skip(), gr.skip(), f"Error: {message}"
                raise gr.Error(message) from exc
            if answer is None:  # the stream ended without its final answer: the engine went away
                chat = [*shown, {"role": "assistant", "content": f"{text}\n\n*(cut off: the engine stopped)*"}]
                yield chat, chat, history, {**turn, "done": True}, gr.skip(), gr.skip(), "Error: the answer was cut off"
                raise gr.Error("The answer was cut off: the engine stopped streaming.")
            chat = [*shown, {"role": "assistant", "content": answer.text + turn_notes(answer)}]
            history = [*messages, {"role": "assistant", "content": answer.text}]
            record = answer.to_dict(passages=False)
            yield (chat, chat, history, {**turn, "text": answer.text, "done": True}, record, citations_html(answer),
                   meta_line(answer, time.perf_counter() - started))
        return respond

    def finish(shown, history, turn):
        """Send, step 3 (after the answer, an error, or a Stop): buttons back; a stopped turn keeps its
        partial answer, marked as stopped, and goes into the history as it was."""
        buttons = (gr.update(interactive=True), gr.update(interactive=False))
        if not turn or turn.get("done"):
            return gr.skip(), gr.skip(), gr.skip(), None, gr.skip(), *buttons
        text = turn.get("text", "")
        base = shown if shown and shown[-1]["role"] == "user" else shown[:-1]
        chat = [*base, {"role": "assistant", "content": f"{text}\n\n{STOPPED}" if text.strip() else STOPPED}]
        if text.strip():
            history = [*history, {"role": "user", "content": turn["question"]}, {"role": "assistant", "content": text}]
        meta = f"Stopped after {len(text)} characters: the generation was cancelled."
        return chat, chat, history, None, meta, *buttons

    def new_chat():
        return ([], [], [], None, None, "", "", "", "", *[""] * n_cols, gr.update(interactive=True),
                gr.update(interactive=False))

    def compare_fn(domain: str):
        def compare(question, k, item, request: gr.Request):
            question = check(question)
            head = f"**Compare** (standalone, without the chat history): “{html.escape(question)}”"
            yield head, *["*generating...*"] * n_cols
            try:
                answers = platform.ask_many([{"domain": domain, "question": question, "rag": r, "lora": lo}
                                             for _, r, lo in CONDITIONS], k=int(k), filter=scope(domain, item),
                                            user=viewer(who(request)))
            except mapped_error_types() as exc:
                yield head, *[""] * n_cols
                raise gr.Error(error_info(exc).message) from exc
            yield head, *[compare_column(label, a) for (label, _, _), a in zip(CONDITIONS, answers)]
        return compare

    def feedback_fn(domain: str, rating: str):
        def send(record, comment, request: gr.Request):
            if not record:
                raise gr.Error("Ask a question first (and let the answer finish); feedback rates an answer.")
            try:
                feedback.append(domain=domain, rating=rating, comment=comment or "", question=record["question"],
                                answer=record["answer"], citations=record["citations"], adapter=record["adapter"],
                                user=viewer(who(request)),
                                extra={k: record[k] for k in ("adapter_version", "abstained", "flags", "evidence",
                                                              "standalone_question")})
            except FeedbackError as exc:
                raise gr.Error(str(exc)) from exc
            return f"Thanks: feedback ({rating}) saved.", ""
        return send

    # ---- documents ---------------------------------------------------------------------------
    def listing(domain: str, request: gr.Request | None):
        listed = library.list(domain, user=who(request))
        rows = [[d["doc_id"], d["title"], d["chunks"], f"private ({d['owner']})" if d["private"] else "everyone"]
                for d in listed["documents"]]
        corpus = listed["corpus"]
        note = f"The package's own corpus: {corpus['documents']:,} documents, {corpus['chunks']:,} chunks."
        return rows, gr.update(choices=[r[0] for r in rows], value=None), note

    def refresh_fn(domain: str):
        def refresh(request: gr.Request):
            return listing(domain, request)
        return refresh

    def upload_fn(domain: str):
        def upload(paths, public, request: gr.Request, progress=gr.Progress()):
            from pathlib import Path

            if not paths:
                raise gr.Error("Choose one or more files first.")
            try:
                files = [(Path(p).name, Path(p).read_bytes()) for p in paths]
                job = library.add(domain, files, user=who(request), public=bool(public))
            except mapped_error_types() as exc:
                raise gr.Error(error_info(exc).message) from exc
            while job.status in ("queued", "running"):
                progress((job.done_files, len(job.files)), desc=f"indexing {len(job.files)} file(s)", unit="files")
                time.sleep(UPLOAD_POLL_S)
            lines = [f"**Upload {job.status}**: {sum(f.status == 'indexed' for f in job.files)} of {len(job.files)} "
                     f"file(s) indexed, {job.added} new chunk(s)." + (f" {job.error}" if job.error else "")]
            lines += [f"- `{html.escape(f.name)}`: " + (f"indexed as `{f.doc_id}` ({f.chunks} chunks)"
                                                      if f.status == "indexed" else f"**{html.escape(f.error or '')}**")
                      for f in job.files]
            return "\n".join(lines), None, *listing(domain, request)
        return upload

    def on_document(domain: str, doc_id, request, act):
        """Run a library action on the picked document; its errors as the app's messages."""
        if not doc_id:
            raise gr.Error("Pick a document first.")
        try:
            return act(domain, doc_id, user=who(request))
        except mapped_error_types() as exc:
            raise gr.Error(error_info(exc).message) from exc

    def remove_fn(domain: str):
        def remove(doc_id, request: gr.Request):
            removed = on_document(domain, doc_id, request, library.remove)
            return f"Removed `{doc_id}` ({removed['removed_chunks']} chunks).", *listing(domain, request)
        return remove

    def publish_fn(domain: str):
        def publish(doc_id, request: gr.Request):
            job = on_document(domain, doc_id, request, library.publish)
            while job.status in ("queued", "running"):  # done: public copy indexed, private one removed
                time.sleep(UPLOAD_POLL_S)
            return f"Published `{doc_id}` to every user: {job.status}.", *listing(domain, request)
        return publish

    def export_fn(domain: str):
        def export(request: gr.Request):
            import tempfile
            from pathlib import Path

            if not is_admin(who(request)):
                raise gr.Error("The feedback log is for admins.")
            out = Path(tempfile.mkdtemp(prefix="feedback-")) / f"{domain}-feedback.jsonl"
            out.write_bytes(feedback.export(domain))
            return gr.update(value=str(out), visible=True)
        return export

    with gr.Blocks(title="Domain assistant", analytics_enabled=False) as demo:
        gr.Markdown("# Domain assistant\nGrounded, cited answers per vertical: one base model, one adapter and "
                    "one index per domain. Ask follow-ups: each tab remembers the conversation.")
        with gr.Tabs():
            for info in platform.info():
                name = info["domain"]
                dom = platform.domain(name)
                with gr.Tab(dom.title, id=name, elem_id=f"tab-{name}"):
                    gr.Markdown(f"{dom.description}\n\nAdapter: `{info['adapter'] or 'none'}`")
                    chat = gr.Chatbot(label=f"{dom.title} chat", elem_id=f"{name}-chat", height=420,
                                      feedback_options=None, buttons=["copy"])
                    shown = gr.State([])     # the chat as displayed (answers with their notes)
                    history = gr.State([])   # the conversation as the model sees it (answer texts only)
                    turn = gr.State(None)    # the turn being answered: {"question", "text" so far, "done"}
                    record = gr.State(None)  # the last finished answer (what feedback rates)
                    question = gr.Textbox(label="Question (Enter sends, Shift+Enter for a new line)", lines=1,
                                          max_lines=8, elem_id=f"{name}-question",
                                          placeholder=(dom.examples[0] if dom.examples else "Ask a question"))
                    with gr.Row():
                        ask_btn = gr.Button("Send", variant="primary", elem_id=f"{name}-ask")
                        stop_btn = gr.Button("Stop", variant="stop", elem_id=f"{name}-stop", interactive=False)
                        new_btn = gr.Button("New chat", elem_id=f"{name}-new")
                    with gr.Row():
                        use_rag = gr.Checkbox(value=True, label="Retrieval (RAG)", elem_id=f"{name}-rag")
                        use_lora = gr.Checkbox(value=True, label="Domain adapter (LoRA)", elem_id=f"{name}-lora")
                        compare_btn = gr.Button("Compare base / +RAG / +LoRA / +RAG+LoRA", elem_id=f"{name}-compare")
                    with gr.Row():
                        k = gr.Slider(1, 12, value=dom.k, step=1, label="Passages shown to the model (k)",
                                      elem_id=f"{name}-k")
                        scoped = dom.retrieval.scope_qa_meta
                        item = gr.Dropdown(choices=item_choices(platform, name) if scoped else [], value=None,
                                           label=f"Ask about one {SCOPE_NAMES.get(scoped, scoped)} (optional)",
                                           visible=bool(scoped), filterable=True, elem_id=f"{name}-pick")
                    if dom.examples:
                        gr.Examples(examples=[[e] for e in dom.examples], inputs=[question])
                    meta = gr.Markdown(elem_id=f"{name}-meta")
                    citations = gr.HTML(elem_id=f"{name}-citations")
                    with gr.Row():
                        comment = gr.Textbox(label="Comment on the last answer (optional)", lines=1,
                                             elem_id=f"{name}-comment")
                        up = gr.Button("Good answer", elem_id=f"{name}-up", scale=0)
                        down = gr.Button("Bad answer", elem_id=f"{name}-down", scale=0)
                    thanks = gr.Markdown(elem_id=f"{name}-thanks")
                    compare_question = gr.Markdown(elem_id=f"{name}-compare-question")
                    with gr.Row():
                        columns = [gr.Markdown(elem_id=f"{name}-compare-{i}") for i in range(n_cols)]
                    with gr.Accordion("Documents", open=False, elem_id=f"{name}-docs"):
                        files = gr.File(label="Add documents (txt, md, rst, html, pdf, docx, csv, jsonl)",
                                        file_count="multiple", elem_id=f"{name}-files")
                        with gr.Row():
                            public = gr.Checkbox(False, label="For every user (admins)", elem_id=f"{name}-public")
                            upload_btn = gr.Button("Upload and index", variant="primary", elem_id=f"{name}-upload")
                        upload_report = gr.Markdown(elem_id=f"{name}-upload-report")
                        doc_list = gr.Dataframe(headers=["document", "title", "chunks", "visible to"], value=[],
                                                interactive=False, elem_id=f"{name}-doc-list")
                        corpus_note = gr.Markdown()
                        with gr.Row():
                            doc_pick = gr.Dropdown(choices=[], label="Document", elem_id=f"{name}-doc-pick")
                            remove_btn = gr.Button("Remove", variant="stop", elem_id=f"{name}-remove")
                            publish_btn = gr.Button("Publish to every user", elem_id=f"{name}-publish")
                        with gr.Row():
                            export_btn = gr.Button("Feedback log (JSONL, admins)", elem_id=f"{name}-feedback-export")
                            export_file = gr.File(label="Feedback log", visible=False, interactive=False,
                                                  elem_id=f"{name}-feedback-file")

                    sent = gr.on([ask_btn.click, question.submit], validate, [question, turn], None).success(
                        start, [question, shown], [question, chat, shown, turn, record, citations, meta, thanks,
                                                   compare_question, *columns, ask_btn, stop_btn], queue=False)
                    answering = sent.success(respond_fn(name), [shown, history, turn, use_rag, use_lora, k, item],
                                             [chat, shown, history, turn, record, citations, meta])
                    answering.then(finish, [shown, history, turn], [chat, shown, history, turn, meta, ask_btn,
                                                                    stop_btn], queue=False)
                    stop_btn.click(None, cancels=[answering])
                    cleared = [chat, shown, history, turn, record, citations, meta, thanks, compare_question,
                               *columns, ask_btn, stop_btn]
                    new_btn.click(new_chat, None, cleared, cancels=[answering], queue=False)
                    chat.clear(new_chat, None, cleared, cancels=[answering], queue=False)
                    compare_btn.click(validate, [question], None).success(compare_fn(name), [question, k, item],
                                                                          [compare_question, *columns])
                    up.click(feedback_fn(name, "up"), [record, comment], [thanks, comment])
                    down.click(feedback_fn(name, "down"), [record, comment], [thanks, comment])
                    listed = [doc_list, doc_pick, corpus_note]
                    demo.load(refresh_fn(name), None, listed)
                    upload_btn.click(upload_fn(name), [files, public], [upload_report, files, *listed],
                                     concurrency_limit=1, concurrency_id="uploads")
                    remove_btn.click(remove_fn(name), [doc_pick], [upload_report, *listed])
                    publish_btn.click(publish_fn(name), [doc_pick], [upload_report, *listed])
                    export_btn.click(export_fn(name), None, export_file)
    return demo


def login_check(platform):
    """Gradio's auth callable for the platform's users (None: no logins configured)."""
    users = platform.users
    return (lambda name, password: users.check_login(name, password)) if users.logins_required else None


def launch(demo: gr.Blocks, host: str, port: int | None, platform=None, **kwargs):
    """The app alone (`python app.py`). Logins: the platform's users (`Settings.users`, ASSISTANT_APP_PASSWORD)."""
    auth = login_check(platform) if platform is not None else None
    return demo.queue(default_concurrency_limit=8).launch(server_name=host, server_port=port, share=False,
                                                          auth=auth, show_error=True, css=CSS, **kwargs)


def mount(app, platform, feedback: FeedbackLog, path: str = "/"):
    """The app inside the HTTP API's FastAPI app (`assistant serve`): the same Platform answers both."""
    demo = build_app(platform, feedback).queue(default_concurrency_limit=8)
    return gr.mount_gradio_app(app, demo, path=path, auth=login_check(platform), show_error=True, css=CSS,
                               max_file_size=platform.settings.max_upload_bytes)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Gradio chat per domain (grounded, cited answers).")
    ap.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 exposes it to the network)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--domain", dest="domains", action="append", help="serve only these domains (repeatable)")
    args = ap.parse_args(argv)
    from assistant import Platform, install_shutdown_rules, reap_children

    install_shutdown_rules()  # docker stop / systemd: the engine and its workers are stopped, not orphaned
    settings = Settings.load()
    platform = None
    try:
        platform = Platform.load(args.domains, settings)
        launch(build_app(platform, FeedbackLog(settings.data_dir / "feedback")), args.host, args.port, platform)
    finally:
        if platform is not None:
            platform.close()
        reap_children()


if __name__ == "__main__":
    main()
