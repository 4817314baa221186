"""Domains made by `new-domain` live in the data directory; the packaged ones (the source checkout, or
ASSISTANT_DOMAINS_DIR) are only read. Lookup searches both and refuses a name found in both."""
from __future__ import annotations

import shutil

import pytest

from assistant.building.scaffold import create_domain
from assistant.building.workflows import new_domain
from assistant.config import REPO_ROOT, Settings
from assistant.domains import get_domain, list_domains
from assistant.errors import DomainError, ScaffoldError
from indexing.retriever import Retriever
from indexing.store import open_store

PACKAGED = {"healthcare", "legal", "finance", "retail", "manufacturing"}


def write_docs(folder):
    folder.mkdir(parents=True)
    (folder / "pumps.md").write_text("# Pumps\n\nA centrifugal pump cavitates when the suction pressure drops below "
                                     "the vapour pressure of the liquid.\n")
    (folder / "fans.txt").write_text("Fan bearings wear faster when the belt is over-tensioned.\n")
    return folder


def test_a_new_domain_lands_in_the_data_directory_and_is_listed_and_loadable(tmp_path, prepared):
    settings = Settings.load(data_dir=tmp_path / "data", base_model=str(prepared.base_model),
                             embed_model=str(prepared.embed_model))
    assert settings.domains_dir == REPO_ROOT / "domains" and settings.user_domains_dir == tmp_path / "data" / "domains"
    report = new_domain("plant-ops", write_docs(tmp_path / "docs"), settings)
    assert report.root == tmp_path / "data" / "domains" / "plant-ops" and report.documents == 2
    assert not (REPO_ROOT / "domains" / "plant-ops").exists()  # the source checkout is untouched
    assert set(list_domains(settings)) == PACKAGED | {"plant-ops"}
    dom = get_domain("plant-ops", settings)
    assert dom.root == report.root and dom.generation.answer_form == "evidence"
    assert get_domain("legal", settings).root == REPO_ROOT / "domains" / "legal"  # packaged ones still found
    store = open_store(settings)
    try:
        from indexing.embedder import Embedder

        hits = Retriever(store, Embedder(prepared.embed_model), max_query_chars=4000).retrieve(
            "plant-ops", "why does a centrifugal pump cavitate?", 1)
        assert hits[0].doc_id == "pumps.md"
    finally:
        store.close()

    with pytest.raises(ScaffoldError, match="already exists at .*domains/legal"):  # a packaged name is taken
        new_domain("legal", tmp_path / "docs", settings)
    assert not (settings.user_domains_dir / "legal").exists()


def test_a_name_in_both_folders_is_refused_and_the_packaged_folder_can_be_moved(tmp_path, monkeypatch):
    packaged = tmp_path / "packaged"
    create_domain("pumps", write_docs(tmp_path / "docs"), packaged)
    monkeypatch.setenv("ASSISTANT_DOMAINS_DIR", str(packaged))
    monkeypatch.setenv("ASSISTANT_HOME", str(tmp_path / "home"))
    settings = Settings.load()
    assert settings.domains_dir == packaged and list_domains(settings) == ["pumps"]
    create_domain("fans", tmp_path / "docs", settings.user_domains_dir)
    assert list_domains(settings) == ["fans", "pumps"]
    shutil.copytree(packaged / "pumps", settings.user_domains_dir / "pumps")  # a copy edited by hand, say
    with pytest.raises(DomainError, match="'pumps' is in both .*packaged/pumps and .*home/domains/pumps"):
        get_domain("fans", settings)
