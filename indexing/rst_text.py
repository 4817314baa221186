"""reStructuredText (Sphinx docs) -> plain text for indexing, through docutils' own parser.

Plain docutils does not know Sphinx's directives and roles (`.. py:function::`, `.. versionadded::`,
`:ref:`, `:func:`, ...): it reports them as errors in the tree. Nothing is allowed to stop the read
(report and halt levels 5) and the tree is then cleaned: a role keeps its visible text (`:ref:`Title <x>``
-> "Title", `:func:`~a.b`` -> "b"), a directive docutils does not know keeps its argument and content
(parsed as rst, or verbatim for code), navigation and file-inclusion directives (toctree, autodoc, include)
are dropped, and docutils' own messages, comments and substitution definitions never reach the text.
Files are never read on a document's behalf (include, raw and literalinclude are off).
"""
from __future__ import annotations

import re
import textwrap

_SETTINGS = {"report_level": 5, "halt_level": 5, "warning_stream": False, "file_insertion_enabled": False,
             "raw_enabled": False, "syntax_highlight": "none", "_disable_config": True, "input_encoding": "unicode"}
_ROLE = re.compile(r"^:(?:[\w.+-]+:)*[\w.+-]+:`(?P<body>.*)`$", re.S)
_DIRECTIVE = re.compile(r"^\.\.\s+(?P<name>[\w.+:-]+?)::(?P<args>.*)$")
# Directives whose text is navigation, file inclusion or markup settings: nothing worth retrieving.
_DROPPED = {"toctree", "include", "literalinclude", "raw", "highlight", "index", "currentmodule", "module",
            "py:module", "py:currentmodule", "sectionauthor", "moduleauthor", "codeauthor", "tabularcolumns",
            "only", "ifconfig", "image", "figure"}
_VERBATIM = {"code", "code-block", "sourcecode", "productionlist", "doctest", "testcode", "testoutput"}
_LABELS = {"versionadded": "Added in version", "versionchanged": "Changed in version",
           "deprecated": "Deprecated since version", "seealso": "See also"}


class RstError(ValueError):
    """The text could not be parsed at all (docutils raised despite halt level 5)."""


def rst_to_text(text: str) -> tuple[str, str | None]:
    """(plain text, the document's title or None). Raises RstError only when docutils itself fails."""
    from docutils.core import publish_doctree

    try:
        tree = publish_doctree(text, settings_overrides=_SETTINGS)
    except Exception as exc:  # docutils raises its own SystemMessage and plain errors on broken input
        raise RstError(f"not valid reStructuredText: {type(exc).__name__}: {exc}"[:300]) from None
    _clean(tree)
    return _tidy(tree.astext()), tree.get("title") or None


def _clean(tree) -> None:
    from docutils import nodes

    for node in list(tree.findall(nodes.problematic)):
        node.parent.replace(node, nodes.Text(_role_text(node.astext())))
    for node in list(tree.findall(nodes.system_message)):
        block = next(iter(node.findall(nodes.literal_block)), None)
        kept = _directive_text(block.astext()) if block is not None else None
        if kept is None and block is not None and node["level"] >= 3 and not block.astext().startswith(".."):
            kept = block.astext()  # e.g. a malformed table: its text is still the document's
        if kept and node.parent is not None:
            node.parent.replace(node, nodes.paragraph(kept, kept))
        elif node.parent is not None:
            node.parent.remove(node)
    for kind in (nodes.comment, nodes.substitution_definition):
        for node in list(tree.findall(kind)):
            node.parent.remove(node)
    for node in list(tree.findall(nodes.topic)):
        if "contents" in node["classes"]:  # `.. contents::`: the section titles again
            node.parent.remove(node)
    # one line per field and per table row, so a value stays beside its name in a chunk
    for node in list(tree.findall(nodes.field)):
        name, body = (child.astext().strip() for child in node.children[:2])
        node.parent.replace(node, nodes.paragraph("", f"{name}: {body}"))
    for node in list(tree.findall(nodes.row)):
        cells = [" ".join(entry.astext().split()) for entry in node.children]
        if any(cells):
            node.parent.replace(node, nodes.paragraph("", " | ".join(cells)))
        else:
            node.parent.remove(node)


def _role_text(source: str) -> str:
    """What Sphinx would show for a role docutils did not know; other markup errors keep their source."""
    match = _ROLE.match(source)
    if not match:
        return source
    body = match.group("body").strip()
    titled = re.match(r"^(?P<title>.+?)\s*<[^<>]+>$", body, re.S)
    if titled:
        return titled.group("title")
    if body.startswith("~"):  # Sphinx shows the last component only
        return body[1:].rsplit(".", 1)[-1]
    return body.removeprefix("!")


def _directive_text(block: str) -> str | None:
    """The readable part of a directive docutils refused (unknown, or a Sphinx-only option); None if not one."""
    lines = block.splitlines()
    match = _DIRECTIVE.match(lines[0].strip()) if lines else None
    if not match:
        return None
    name, args = match.group("name").lower(), match.group("args").strip()
    if name in _DROPPED or name.startswith("auto"):
        return ""
    rest = lines[1:]
    while rest and rest[0].strip() and not rest[0].strip().startswith(":"):  # the argument goes on
        args = f"{args} {rest.pop(0).strip()}"
    while rest and re.match(r"^\s*:[\w-]+:", rest[0]):  # options: Sphinx-only ones are what failed
        rest.pop(0)
    content = textwrap.dedent("\n".join(rest)).strip("\n")
    if name in _VERBATIM:
        return content
    label = _LABELS.get(name)
    if label:  # as Sphinx writes it: "Added in version 2.1: ...", "See also: ..."; the text may hold roles
        version, _, inline = args.partition(" ") if name != "seealso" else ("", "", args)
        body = rst_to_text(f"{inline}\n\n{content}")[0]
        return f"{label} {version}".strip() + ": " + body
    # a signature (`.. py:function:: run(port=8000)`) stays verbatim, the content is read as rst
    return "\n\n".join(part for part in (args, rst_to_text(content)[0] if content else "") if part)


def _tidy(text: str) -> str:
    return re.sub(r"\n{3,}", "\n\n", text).strip()
