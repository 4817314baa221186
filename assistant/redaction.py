"""Personal identifiers masked in passages before the model sees them, and in its answers
(domains with `[privacy] redact_identifiers = true`, e.g. healthcare).

Pattern-based, so it covers identifiers with a recognisable shape or label: US SSNs, phone numbers,
e-mail addresses, record numbers after MRN / record / patient ID labels, dates of birth after a DOB
label, and names after a "Patient:" / "Name:" label. Free-standing names in running text are not
detected (that needs an NER model, which no package here ships).
"""
from __future__ import annotations

import re

# (label, pattern): a pattern's group "keep" (the label word before the identifier) stays.
_PATTERNS = [
    ("[SSN]", re.compile(r"\b\d{3}-\d{2}-\d{4}\b")),
    ("[EMAIL]", re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")),
    ("[RECORD-ID]", re.compile(r"(?i)(?P<keep>\b(?:mrn|medical record(?: number)?|record no\.?|patient id)[:#]?\s*)"
                               r"[A-Z0-9-]*\d[A-Z0-9-]{3,}")),
    ("[DATE-OF-BIRTH]", re.compile(r"(?i)(?P<keep>\b(?:dob|date of birth|born)[:]?\s*(?:on\s+)?)"
                                   r"(?:\d{4}-\d{2}-\d{2}|\d{1,2}[/.]\d{1,2}[/.]\d{2,4}|[A-Z][a-z]+ \d{1,2},? \d{4})")),
    ("[PHONE]", re.compile(r"(?<![\w-])(?:\+?1[ .-]?)?\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?![\w-])")),
    ("[NAME]", re.compile(r"(?P<keep>\b(?:(?:Patient|Name):\s*|(?:Mr|Mrs|Ms)\.\s+))"
                          r"[A-Z][a-zA-Z'-]+(?: [A-Z][a-zA-Z'-]+){0,3}")),
]


def redact(text: str) -> str:
    for label, pattern in _PATTERNS:
        text = pattern.sub(lambda m, label=label: (m.groupdict().get("keep") or "") + label, text)
    return text
