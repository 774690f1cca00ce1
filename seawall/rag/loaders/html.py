"""HTML loader.

``selectolax`` (Lexbor engine) is a fast, lenient HTML5 parser in one
self-contained wheel (C, no libxml2), with the plain node walking we need.
Boilerplate (script/style/nav/header/footer/aside/form, navigation roles,
hidden nodes, cookie/share/sidebar classes) is dropped by a small explicit rule
set instead of a heavyweight extractor such as trafilatura, and
``main``/``article`` is read in preference to the whole body. The document
text is the extracted plain text, blocks separated by blank lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from seawall.rag.documents import LoadedDocument
from seawall.rag.loaders.common import Piece, assemble, stem

_SKIP_TAGS = frozenset(
    {"script", "style", "noscript", "template", "nav", "aside", "form", "iframe", "svg",
     "canvas", "button", "select", "input", "textarea", "dialog", "footer", "object",
     "embed", "map", "audio", "video", "head", "meta", "link"}
)  # fmt: skip
_SKIP_ROLES = frozenset(
    {"navigation", "banner", "contentinfo", "search", "complementary", "menu", "menubar",
     "dialog"}
)  # fmt: skip
_BOILERPLATE_CLASS = re.compile(
    r"(?:^|[-_])(?:nav|navbar|menu|breadcrumbs?|sidebar|cookies?|consent|share|sharing|social"
    r"|advert|advertisement|ads|newsletter|skip-link|popup|modal)(?:$|[-_])"
)
_INLINE_TAGS = frozenset(
    {"a", "abbr", "b", "bdi", "bdo", "br", "cite", "code", "data", "del", "dfn", "em", "font",
     "i", "img", "ins", "kbd", "label", "mark", "q", "s", "samp", "small", "span", "strike",
     "strong", "sub", "sup", "time", "tt", "u", "var", "wbr", "-text"}
)  # fmt: skip
_HEADINGS = {f"h{i}": i for i in range(1, 7)}


def _is_boilerplate(node: Any, in_article: bool) -> bool:
    tag = node.tag
    if tag in _SKIP_TAGS or (tag == "header" and not in_article):
        return True
    attrs = node.attributes
    if "hidden" in attrs or attrs.get("aria-hidden") == "true":
        return True
    if (attrs.get("role") or "") in _SKIP_ROLES:
        return True
    if tag in _INLINE_TAGS:
        return False
    names = f"{attrs.get('class') or ''} {attrs.get('id') or ''}".lower().split()
    return any(_BOILERPLATE_CLASS.search(n) for n in names)


def _collapse(text: str) -> str:
    """Collapse HTML whitespace; U+2028 marks a <br> and survives as a newline."""
    lines = (" ".join(x.split()) for x in text.split("\u2028"))
    return "\n".join(x for x in lines if x)


class _HtmlWalker:
    """Walk the content root in reading order, emitting blocks."""

    def __init__(self) -> None:
        self.pieces: list[Piece] = []
        self._inline: list[str] = []

    def _flush(self) -> None:
        text = _collapse("".join(self._inline))
        self._inline.clear()
        if text:
            self.pieces.append(Piece("paragraph", text))

    def inline_text(self, node: Any, in_article: bool, skip: frozenset[str] = frozenset()) -> str:
        out: list[str] = []
        for child in node.iter(include_text=True):
            tag = child.tag
            if tag == "-text":
                out.append(child.text_content or "")
            elif tag == "br":
                out.append("\u2028")
            elif tag in skip or tag.startswith(("_", "!")) or _is_boilerplate(child, in_article):
                continue
            else:
                sep = "" if tag in _INLINE_TAGS else " "
                out.append(sep + self.inline_text(child, in_article, skip) + sep)
        return "".join(out)

    def walk(self, node: Any, in_article: bool) -> None:
        for child in node.iter(include_text=True):
            tag = child.tag
            if tag == "-text":
                self._inline.append(child.text_content or "")
                continue
            if tag.startswith(("_", "!")) or _is_boilerplate(child, in_article):
                continue
            if tag in _INLINE_TAGS:
                text = "\u2028" if tag == "br" else self.inline_text(child, in_article)
                self._inline.append(text)
                continue
            self._flush()
            self.block(child, tag, in_article)
        self._flush()

    def block(self, node: Any, tag: str, in_article: bool) -> None:
        if tag in _HEADINGS:
            text = _collapse(self.inline_text(node, in_article)).replace("\n", " ")
            if text:
                self.pieces.append(Piece("heading", text, _HEADINGS[tag]))
        elif tag == "p":
            self.pieces.append(Piece("paragraph", _collapse(self.inline_text(node, in_article))))
        elif tag == "pre":
            lines = (node.text(deep=True) or "").expandtabs(4).splitlines()
            self.pieces.append(Piece("code", "\n".join(x.rstrip() for x in lines).strip("\n")))
        elif tag == "table":
            self.table(node, in_article)
        elif tag in ("ul", "ol", "dl"):
            lines = self.list_lines(node, in_article, 0)
            self.pieces.append(Piece("list", "\n".join(lines)))
        elif tag == "blockquote":
            inner = _HtmlWalker()
            inner.walk(node, in_article)
            self.pieces.append(Piece("quote", "\n\n".join(p.text for p in inner.pieces)))
        elif tag != "hr":
            self.walk(node, in_article or tag == "article")

    def list_lines(self, node: Any, in_article: bool, depth: int) -> list[str]:
        lines: list[str] = []
        number = int(node.attributes.get("start") or 1) if node.tag == "ol" else 0
        pad = "  " * depth
        for item in node.iter():
            if _is_boilerplate(item, in_article):
                continue
            text = _collapse(self.inline_text(item, in_article, frozenset({"ul", "ol", "dl"})))
            text = text.replace("\n", " ")
            if item.tag == "dd":
                marker = "  "
            elif node.tag == "ol":
                marker, number = f"{number}. ", number + 1
            else:
                marker = "- "
            if text:
                lines.append(pad + marker + text)
            for sub in _nested_lists(item):
                lines.extend(self.list_lines(sub, in_article, depth + 1))
        return lines

    def table(self, node: Any, in_article: bool) -> None:
        """Rows become GFM table lines; a header row gets a separator so the
        chunker can repeat it when it splits the table."""
        caption = node.css_first("caption")
        if caption is not None:
            text = _collapse(self.inline_text(caption, in_article))
            self.pieces.append(Piece("paragraph", text))
        rows: list[str] = []
        for i, tr in enumerate(r for r in node.css("tr") if _owning_table(r) == node.mem_id):
            cells = [c for c in tr.iter() if c.tag in ("td", "th")]
            texts = [
                _collapse(self.inline_text(c, in_article)).replace("\n", " ").replace("|", "\\|")
                for c in cells
            ]
            if not any(texts):
                continue
            rows.append("| " + " | ".join(texts) + " |")
            if i == 0 and cells and all(c.tag == "th" for c in cells):
                rows.append("| " + " | ".join("---" for _ in cells) + " |")
        if rows:
            self.pieces.append(Piece("table", "\n".join(rows)))


def _nested_lists(node: Any) -> Iterator[Any]:
    """The outermost lists inside a list item (however deeply wrapped)."""
    for child in node.iter():
        if child.tag in ("ul", "ol", "dl"):
            yield child
        else:
            yield from _nested_lists(child)


def _owning_table(node: Any) -> int | None:
    """The mem_id of a row's table (wrappers are not identical objects)."""
    parent = node.parent
    while parent is not None and parent.tag != "table":
        parent = parent.parent
    return parent.mem_id if parent is not None else None


def load_html(
    text: str, source: str, meta: dict[str, Any], title: str | None, modified: float | None
) -> LoadedDocument:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(text)
    articles = tree.css("article")
    root = tree.css_first("main") or (articles[0] if len(articles) == 1 else None)
    root = root or tree.body or tree.root
    walker = _HtmlWalker()
    if root is not None:
        walker.walk(root, root.tag in ("article", "main"))
    body, blocks = assemble(walker.pieces)
    if not title:
        tag = tree.css_first("title")
        title = " ".join((tag.text() if tag is not None else "").split())
    if not title:
        title = next((b.text for b in blocks if b.kind == "heading" and b.level == 1), "")
    if not title:
        h1 = tree.css_first("h1")
        title = " ".join((h1.text() if h1 is not None else "").split())
    return LoadedDocument(source, "html", title or stem(source), body, blocks, meta, modified)
