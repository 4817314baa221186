"""Uploads (assistant/library.py) on the real embedded Qdrant store and the real embedding model: per-file
errors that lose nothing, background ingest, private collections enforced by the store on every search
(filters and doc ids cannot widen them), listing, removing, publishing, and a corpus re-sync that keeps
uploads."""
from __future__ import annotations

import time

import pytest

from assistant.domains import get_domain
from assistant.errors import InputError, NotFoundError, PermissionDeniedError
from assistant.library import DocumentLibrary
from assistant.users import User
from indexing.documents import read_corpus_jsonl
from indexing.retriever import Retriever

ALICE, BOB, ADMIN = User("alice"), User("bob"), User("root", admin=True)
ALICE_FACT = ("# Zorblax valve\n\nThe Zorblax relief valve on line 7 opens at 47 bar. Service it every 300 hours "
              "with the blue gasket kit.\n")
BOB_FACT = "Bob's note: the Quimby conveyor motor runs at 1,450 rpm and its bearing is a 6205-2RS.\n"


def wait(library, job, user, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        current = library.job(job.domain, job.id, user=user)
        if current.status in ("done", "failed"):
            return current
        time.sleep(0.2)
    raise AssertionError(f"job {job.id} still {job.status} after {timeout} s")


@pytest.fixture()
def library(tmp_path, settings, embedder, small_corpus):
    from assistant.building.indexer import ingest_into_domain
    from indexing.store import EdgeStore

    local = type(settings)(**{**vars(settings), "data_dir": tmp_path})
    dom = get_domain("manufacturing", local)
    store = EdgeStore(tmp_path / "index")
    ingest_into_domain(dom, store, embedder, read_corpus_jsonl(small_corpus).documents, progress=False)
    lib = DocumentLibrary(local, store, embedder, {dom.name: dom})
    yield lib
    lib.close()
    store.close()


def search(library, question, user, **kwargs):
    retriever = Retriever(library.store, library.embedder, max_query_chars=4000)
    return retriever.retrieve("manufacturing", question, 5, viewer=user.name if user else None, **kwargs)


def test_upload_is_private_to_its_owner_on_every_search(library):
    job = wait(library, library.add("manufacturing", [("valve.md", ALICE_FACT.encode())], user=ALICE), ALICE)
    assert job.status == "done" and job.files[0].status == "indexed" and job.files[0].chunks >= 1, job.to_dict()
    doc_id = job.files[0].doc_id
    assert doc_id == "upload/alice/valve.md"
    question = "At what pressure does the Zorblax relief valve open?"
    assert search(library, question, ALICE)[0].doc_id == doc_id
    for user in (BOB, None, ADMIN):  # an admin manages uploads, but does not search others' private ones
        assert doc_id not in {p.doc_id for p in search(library, question, user)}, user
    for trick in ({"doc_id": doc_id}, {"owner": "alice"}, {"doc_id": [doc_id, "x"]}, {"source": doc_id}):
        assert search(library, question, BOB, filter=trick) == [], trick
    assert search(library, question, ALICE, filter={"owner": "alice"})[0].doc_id == doc_id
    # its job is private too
    with pytest.raises(NotFoundError):
        library.job("manufacturing", job.id, user=BOB)


def test_bad_files_get_their_own_errors_and_the_rest_is_indexed(library):
    files = [("good.txt", BOB_FACT.encode()), ("empty.md", b""), ("tool.exe", b"MZ\x90"),
             ("binary.txt", b"abc\x00def"), ("latin1.txt", "caf\xe9 cr\xe8me".encode("latin-1")),
             ("broken.pdf", b"%PDF-1.4 this is not a pdf"), ("../../etc/passwd.md", b"path tricks stay inside"),
             ("", b"no name")]
    job = wait(library, library.add("manufacturing", files, user=BOB), BOB)
    by_name = {f.name: f for f in job.files}
    assert by_name["good.txt"].status == "indexed"
    assert by_name["../../etc/passwd.md"].status == "indexed"
    assert by_name["../../etc/passwd.md"].doc_id == "upload/bob/passwd.md"
    assert (library.root / "manufacturing" / "bob" / "passwd.md").is_file()
    for name, why in (("empty.md", "empty"), ("tool.exe", "unsupported"), ("binary.txt", "binary"),
                      ("latin1.txt", "UTF-8"), ("broken.pdf", "PDF"), ("", "name")):
        assert by_name[name].status == "error" and why in by_name[name].error, (name, by_name[name])
    assert len(job.to_dict()["errors"]) == 6
    listed = library.list("manufacturing", user=BOB)
    assert {d["doc_id"] for d in listed["documents"]} == {"upload/bob/good.txt", "upload/bob/passwd.md"}
    assert listed["corpus"]["documents"] == 40 and listed["corpus"]["chunks"] >= 40
    with pytest.raises(InputError):
        library.add("manufacturing", [], user=BOB)


def test_list_remove_publish_and_the_rules_on_who_may(library):
    a = wait(library, library.add("manufacturing", [("valve.md", ALICE_FACT.encode())], user=ALICE), ALICE)
    b = wait(library, library.add("manufacturing", [("motor.txt", BOB_FACT.encode())], user=BOB), BOB)
    a_id, b_id = a.files[0].doc_id, b.files[0].doc_id
    assert [d["doc_id"] for d in library.list("manufacturing", user=ALICE)["documents"]] == [a_id]
    assert {d["doc_id"] for d in library.list("manufacturing", user=ADMIN)["documents"]} == {a_id, b_id}
    with pytest.raises(NotFoundError):  # bob cannot learn that alice's document exists
        library.remove("manufacturing", a_id, user=BOB)
    corpus_doc = next(iter(library._points("manufacturing")))
    with pytest.raises(PermissionDeniedError):
        library.remove("manufacturing", corpus_doc, user=ADMIN)
    with pytest.raises(PermissionDeniedError):
        library.publish("manufacturing", b_id, user=BOB)
    with pytest.raises(PermissionDeniedError):
        library.add("manufacturing", [("x.txt", b"x")], user=BOB, public=True)
    published = wait(library, library.publish("manufacturing", b_id, user=ADMIN), ADMIN)
    assert published.files[0].doc_id == "upload/_public/motor.txt", published.to_dict()
    assert b_id not in library._points("manufacturing")  # the private copy is gone once the job is done
    hits = search(library, "What bearing does the Quimby conveyor motor use?", ALICE)
    assert hits[0].doc_id == "upload/_public/motor.txt"
    assert library.remove("manufacturing", a_id, user=ALICE)["removed_chunks"] >= 1
    assert library.list("manufacturing", user=ALICE)["documents"][0]["doc_id"] == "upload/_public/motor.txt"
    assert not (library.root / "manufacturing" / "alice" / "valve.md").exists()


def test_a_corrupt_reupload_keeps_the_good_version_and_a_resync_keeps_uploads(library, small_corpus):
    from assistant.building.indexer import ingest_into_domain

    pdf = _pdf_bytes()
    good = wait(library, library.add("manufacturing", [("manual.pdf", pdf)], user=ALICE), ALICE)
    assert good.files[0].status == "indexed", good.to_dict()
    bad = wait(library, library.add("manufacturing", [("manual.pdf", b"%PDF-1.4 garbage")], user=ALICE), ALICE)
    assert bad.files[0].status == "error"
    kept = library.root / "manufacturing" / "alice" / "manual.pdf"
    assert kept.read_bytes() == pdf
    assert search(library, "Zorblax valve opening pressure", ALICE)[0].doc_id == "upload/alice/manual.pdf"
    dom = library.domains["manufacturing"]  # the package's corpus re-synced with prune: uploads stay
    report = ingest_into_domain(dom, library.store, library.embedder, read_corpus_jsonl(small_corpus).documents[:30],
                                prune=True, progress=False)
    assert report.documents_removed == 10
    assert "upload/alice/manual.pdf" in library._points("manufacturing")


def _pdf_bytes() -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.multi_cell(0, 10, ALICE_FACT.replace("#", "").strip())
    return bytes(pdf.output())
