""".rst documents (Sphinx / reStructuredText, the usual format of Python package docs) read through docutils:
the text a reader sees is indexed, Sphinx-only markup and docutils' own messages are not."""
from __future__ import annotations

from pathlib import Path

from indexing.documents import SUPPORTED_SUFFIXES, read_source
from indexing.ingest import ingest_path
from indexing.retriever import Retriever
from indexing.store import EdgeStore

FIXTURE = Path(__file__).parent / "fixtures" / "sphinx_docs"  # a Sphinx page written for these tests


def test_a_sphinx_page_reads_as_the_text_a_reader_sees():
    report = read_source(FIXTURE)
    assert not report.errors and ".rst" in SUPPORTED_SUFFIXES
    doc = report.documents[0]
    assert (doc.doc_id, doc.doc_type, doc.title) == ("configuration.rst", "rst", "Configuring the agent")
    text = doc.text
    for kept in ("values below 2 are\nrefused",                          # a Sphinx-only directive's content
                 "Settings given on the command line always win",        # a docutils admonition
                 "[polling]\npoll_interval = 15",                        # code-block with Sphinx-only options
                 "pumpagent.read_flow(sensor_id, *, timeout=3.0)",       # a py:function signature, verbatim
                 "Changed in version 2.3: The minimum poll interval",    # versionchanged as Sphinx words it
                 "Deprecated since version 3.0: The alarm_email setting; use alarm_webhook instead.",
                 "See\nthe install guide and /usage/cli",                # :ref: keeps its title, :doc: its target
                 "the entry point is\nmain.",                            # :py:func:`~a.b.main` shows "main"
                 "trip | Flow below 50% of the set point",               # a table row stays on one line
                 "param sensor_id: the sensor's bus address",            # a field beside its value
                 "PumpAgent logs every alarm"):                          # a substitution, replaced
        assert kept in text, kept
    for dropped in ("..", "toctree", "autoclass", "alarms/webhooks", "ERROR", "Unknown", "directive",
                    "must not be indexed", ":ref:", ":linenos:", "On this page", "How the pump agent reads"):
        assert dropped not in text, dropped


def test_malformed_rst_still_reads_and_unreadable_files_say_why(tmp_path):
    (tmp_path / "broken.rst").write_text(
        "Short\n===\n\nAn ``unclosed literal and *emphasis.\n\n+-----+----\n| bad | grid\n+-----+\n\n"
        ".. mystery-directive::\n      badly indented body text\n   stays readable\n\n:unknownrole:`kept words`\n",
        encoding="utf-8")
    (tmp_path / "latin1.rst").write_bytes("Caf\xe9 manual\n============\n".encode("latin-1"))
    (tmp_path / "only-navigation.rst").write_text(".. toctree::\n\n   one\n   two\n", encoding="utf-8")
    (tmp_path / "deep.rst").write_text("".join(" " * i + f"level {i}\n\n" for i in range(400)), encoding="utf-8")
    report = read_source(tmp_path)
    [doc] = report.documents
    assert doc.doc_id == "broken.rst"
    for kept in ("unclosed literal and", "| bad | grid", "badly indented body text", "stays readable", "kept words"):
        assert kept in doc.text, (kept, doc.text)
    assert "Unknown" not in doc.text and "WARNING" not in doc.text
    errors = {Path(e.where).name: e.reason for e in report.errors}
    assert "not UTF-8" in errors["latin1.rst"]
    assert "no extractable text" in errors["only-navigation.rst"]
    assert "not valid reStructuredText" in errors["deep.rst"] and "RecursionError" in errors["deep.rst"]


def test_rst_docs_are_indexed_and_retrieved(tmp_path, embedder):
    store = EdgeStore(tmp_path / "index")
    try:
        result = ingest_path(store, "docs", FIXTURE, embedder, progress=False)
        assert result.ok and result.documents == 1
        hits = Retriever(store, embedder, max_query_chars=4000).retrieve(
            "docs", "what is the minimum poll interval of the flow sensors?", k=2)
        assert hits[0].doc_id == "configuration.rst" and hits[0].title == "Configuring the agent"
        assert "poll" in hits[0].text
    finally:
        store.close()
