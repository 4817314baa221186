"""The Gradio chat: one tab per domain, a thin layer over `assistant.Platform`.

Each tab (title, description and example questions from the domain's `domain.toml`) streams a
grounded answer, lists its citations (number, title, score, the passage in an expandable block), shows
the adapter version and the latency, and takes thumbs up/down feedback with a comment
(`assistant/feedback.py`). Compare mode answers the same question as base, +RAG, +LoRA and +RAG+LoRA
side by side, in one mixed engine batch.

    python app.py [--host 127.0.0.1] [--port 7860] [--domain healthcare ...]

Binds 127.0.0.1 unless told otherwise, never creates a share link, sends no analytics
(GRADIO_ANALYTICS_ENABLED=False, set by assistant.configure_environment). Set ASSISTANT_APP_PASSWORD (and optionally
ASSISTANT_APP_USER, default "assistant") to require a login.
"""
from __future__ import annotations

import argparse
import html
import os
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
    mapped_error_types,
)

configure_environment()  # offline, no analytics: before Gradio is imported
import gradio as gr  # noqa: E402

CONDITIONS = [("base", False, False), ("+RAG", True, False), ("+LoRA", False, True), ("+RAG+LoRA", True, True)]


def citations_html(answer: Answer | None) -> str:
    if answer is None:
        return ""
    if not answer.citations:
        reason = {"gate": "abstained: nothing retrieved is close enough to the question",
                  "model": "abstained: the model could not answer from the passages"}.get(
            answer.abstained_by or "", "no passage cited")
        return f"<p class='no-citations'><em>No citations ({reason}).</em></p>"
    items = []
    for c in answer.citations:
        items.append(
            f"<details class='citation'><summary>[{c.n}] {html.escape(c.title or c.doc_id)} "
            f"<small>(doc {html.escape(c.doc_id)}, score {c.score:.3f})</small></summary>"
            f"<blockquote>{html.escape(c.text)}</blockquote></details>")
    return "<div class='citations'>" + "".join(items) + "</div>"


def meta_line(answer: Answer, seconds: float) -> str:
    adapter = answer.adapter or "base model (no adapter)"
    flags = ", ".join(answer.flags) or "ok"
    if answer.choice:
        flags += f" · choice {answer.choice['label']!r} picked by scoring {len(answer.choice['scores'])} answers"
    return (f"Adapter: `{adapter}` · latency {seconds:.1f} s (retrieve {answer.timings.get('retrieve_ms', 0):.0f} ms, "
            f"first token {answer.timings.get('first_token_ms') or 0:.0f} ms) · {flags}")


def build_app(platform, feedback: FeedbackLog) -> gr.Blocks:
    max_chars = platform.settings.max_question_chars

    def check(question: str) -> str:
        if not (question or "").strip():
            raise gr.Error("Please type a question.")
        try:
            return check_question(question, max_chars)
        except AssistantError as exc:
            raise gr.Error(f"That question is {len(question)} characters long; the limit is {max_chars}.") from exc

    def ask_fn(domain: str):
        def ask(question, use_rag, use_lora):
            question = check(question)
            started = time.perf_counter()
            text = ""
            try:
                for piece in platform.stream(domain, question, rag=use_rag, lora=use_lora):
                    if isinstance(piece, str):
                        text += piece
                        yield text, "", "*generating...*", None
                    else:
                        record = piece.to_dict(passages=False)
                        yield piece.text, citations_html(piece), meta_line(piece, time.perf_counter() - started), record
            except mapped_error_types() as exc:
                raise gr.Error(error_info(exc).message) from exc
        return ask

    def compare_fn(domain: str):
        def compare(question):
            question = check(question)
            try:
                answers = platform.ask_many([{"domain": domain, "question": question, "rag": r, "lora": lo}
                                             for _, r, lo in CONDITIONS])
            except mapped_error_types() as exc:
                raise gr.Error(error_info(exc).message) from exc
            return [f"**{label}**\n\n{a.text}\n\n" + "".join(f"[{c.n}] {c.title or c.doc_id}  \n" for c in a.citations)
                    for (label, _, _), a in zip(CONDITIONS, answers)]
        return compare

    def feedback_fn(domain: str, rating: str):
        def send(record, comment):
            if not record:
                raise gr.Error("Ask a question first; feedback rates an answer.")
            try:
                feedback.append(domain=domain, rating=rating, comment=comment or "", question=record["question"],
                                answer=record["answer"], citations=record["citations"], adapter=record["adapter"],
                                extra={k: record[k] for k in ("adapter_version", "abstained", "flags", "evidence")})
            except FeedbackError as exc:
                raise gr.Error(str(exc)) from exc
            return f"Thanks: feedback ({rating}) saved.", ""
        return send

    with gr.Blocks(title="Domain assistant", analytics_enabled=False) as demo:
        gr.Markdown("# Domain assistant\nGrounded, cited answers per vertical: one base model, one adapter and "
                    "one index per domain.")
        with gr.Tabs():
            for info in platform.info():
                name = info["domain"]
                dom = platform.domain(name)
                with gr.Tab(dom.title, id=name, elem_id=f"tab-{name}"):
                    gr.Markdown(f"{dom.description}\n\nAdapter: `{info['adapter'] or 'none'}`")
                    question = gr.Textbox(label="Question", lines=2, max_lines=8, elem_id=f"{name}-question",
                                          placeholder=(dom.examples[0] if dom.examples else "Ask a question"))
                    with gr.Row():
                        use_rag = gr.Checkbox(value=True, label="Retrieval (RAG)", elem_id=f"{name}-rag")
                        use_lora = gr.Checkbox(value=True, label="Domain adapter (LoRA)", elem_id=f"{name}-lora")
                        ask_btn = gr.Button("Ask", variant="primary", elem_id=f"{name}-ask")
                        compare_btn = gr.Button("Compare base / +RAG / +LoRA / +RAG+LoRA", elem_id=f"{name}-compare")
                    if dom.examples:
                        gr.Examples(examples=[[e] for e in dom.examples], inputs=[question])
                    answer = gr.Markdown(elem_id=f"{name}-answer")
                    citations = gr.HTML(elem_id=f"{name}-citations")
                    meta = gr.Markdown(elem_id=f"{name}-meta")
                    record = gr.State(None)
                    with gr.Row():
                        comment = gr.Textbox(label="Comment (optional)", lines=1, elem_id=f"{name}-comment")
                        up = gr.Button("Good answer", elem_id=f"{name}-up", scale=0)
                        down = gr.Button("Bad answer", elem_id=f"{name}-down", scale=0)
                    thanks = gr.Markdown(elem_id=f"{name}-thanks")
                    with gr.Row(visible=True):
                        columns = [gr.Markdown(elem_id=f"{name}-compare-{i}") for i in range(len(CONDITIONS))]
                    ask_btn.click(ask_fn(name), [question, use_rag, use_lora], [answer, citations, meta, record])
                    question.submit(ask_fn(name), [question, use_rag, use_lora], [answer, citations, meta, record])
                    compare_btn.click(compare_fn(name), [question], columns)
                    up.click(feedback_fn(name, "up"), [record, comment], [thanks, comment])
                    down.click(feedback_fn(name, "down"), [record, comment], [thanks, comment])
    return demo


def launch(demo: gr.Blocks, host: str, port: int | None, **kwargs):
    password = os.environ.get("ASSISTANT_APP_PASSWORD")
    auth = (os.environ.get("ASSISTANT_APP_USER", "assistant"), password) if password else None
    return demo.queue(default_concurrency_limit=8).launch(server_name=host, server_port=port, share=False,
                                                          auth=auth, show_error=True, **kwargs)


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
        launch(build_app(platform, FeedbackLog(settings.data_dir / "feedback")), args.host, args.port)
    finally:
        if platform is not None:
            platform.close()
        reap_children()


if __name__ == "__main__":
    main()
