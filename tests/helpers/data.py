"""Q&A rows from the domain packages, for tests."""
from assistant.domains import get_domain


def qa_row(domain: str, split: str = "test", index: int = 0) -> dict:
    rows = [r for r in get_domain(domain).qa_rows(split) if r.get("gold_doc_ids")]
    return rows[index]
