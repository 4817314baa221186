"""Small real documents of every supported type, and broken ones, written by the tests."""
from __future__ import annotations

import zipfile
from pathlib import Path

# A minimal but valid one-page PDF whose text layer says the sentence below (offsets computed at write time).
_PDF_TEXT = "Turbine blades crack under thermal fatigue."


def write_pdf(path: Path, text: str = _PDF_TEXT) -> Path:
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))
    return path


def write_docx(path: Path, text: str) -> Path:
    document = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
                f'<w:body><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:body></w:document>')
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("[Content_Types].xml",
                   '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
                   'content-types"><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/'
                   'document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.'
                   'main+xml"/></Types>')
        z.writestr("word/document.xml", document)
    return path


def make_mixed_folder(root: Path) -> dict[str, str]:
    """Good files of every type and bad ones. Returns {relative path: 'ok' | expected error fragment}."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "notes.txt").write_text("Pumps cavitate when suction pressure drops below vapour pressure.")
    (root / "guide.md").write_text("# Gearbox\n\nGear tooth wear shows up as rising vibration at mesh frequency.")
    (root / "page.html").write_text("<html><body><h1>Compressors</h1><p>Surge happens at low flow.</p></body></html>")
    write_pdf(root / "report.pdf")
    write_docx(root / "memo.docx", "Transformer insulation ages with heat and moisture.")
    (root / "sensors.csv").write_text("asset,sensor\nmotor,current\nbearing,vibration\n")
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "cards.jsonl").write_text('{"doc_id": "card-1", "title": "Fan", '
                                              '"text": "Fan imbalance raises 1x vibration."}\n')
    (root / "empty.txt").write_text("")
    (root / "binary.txt").write_bytes(b"abc\x00\x01\x02def")
    (root / "corrupt.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf\n")
    (root / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me".encode("latin-1"))
    (root / "image.xyz").write_bytes(b"??")
    return {"notes.txt": "ok", "guide.md": "ok", "page.html": "ok", "report.pdf": "ok", "memo.docx": "ok",
            "sensors.csv": "ok", "sub/cards.jsonl": "ok", "empty.txt": "empty file",
            "binary.txt": "binary content", "corrupt.pdf": "could not be read as PDF",
            "latin1.txt": "not UTF-8", "image.xyz": "unsupported file type"}
