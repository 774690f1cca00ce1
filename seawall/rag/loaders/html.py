"""HTML loader.

``selectolax`` (Lexbor engine) is a fast, lenient HTML5 parser in one
self-contained wheel (C, no libxml2), with the plain node walking we need.
Boilerplate (script/style/nav/header/footer/aside/form, navigation roles,
hidden nodes, cookie/share/sidebar classes) is dropped by a small explicit rule
set instead of a heavyweight extractor such as trafilatura, and
``main``/``article`` is read in preference to the whole body. The document
text is the extracted plain text, blocks separated by blank lines.

Nesting is bounded twice. Lexbor's tree building takes time quadratic in
the nesting depth (each new element looks down the stack of open ones:
20,000 nested ``div`` 1.4 s, 100,000 about 40 s), so a page whose tags open
more than ``MAX_NESTING`` elements deep, or whose depths at each opening tag
add up to more than ``MAX_NESTING_WORK`` (about a second of parsing), is
refused before parsing (:class:`TooDeeplyNested`, a ``ValueError``). And the walk
recurses along the tree, so elements deeper than ``MAX_DEPTH`` (no real page
comes close) are read as plain text in one piece by the parser itself.
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
MAX_DEPTH = 64
MAX_NESTING = 10_000
MAX_NESTING_WORK = 100_000_000  # a normal 8 MB page: a few million
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)")
# Elements that never nest: void, or closed by the next of their kind.
_FLAT = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
     "track", "wbr", "p", "li", "dt", "dd", "option", "optgroup", "tr", "td", "th", "thead",
     "tbody", "tfoot", "rp", "rt"}
)  # fmt: skip


class TooDeeplyNested(ValueError):
    """The page nests elements deeper than the loader reads."""


def _check_nesting(text: str) -> None:
    """Refuse a page nested too deep for Lexbor to parse in reasonable time.

    Depth is an upper bound from the tags alone (open minus closed, leaving
    out the elements that cannot nest), in one regex pass: no parse needed."""
    depth = work = 0
    for m in _TAG.finditer(text):
        if m.group(2).lower() in _FLAT:
            continue
        if m.group(1):
            depth = max(0, depth - 1)
            continue
        depth += 1
        work += depth
        if depth > MAX_NESTING or work > MAX_NESTING_WORK:
            raise TooDeeplyNested(f"the page nests elements too deeply (over {MAX_NESTING} "
                                  "levels, or deep nesting repeated throughout)")


def _flat_text(node: Any) -> str:
    """All the text under ``node``, read by Lexbor without recursing in Python."""
    return node.text(deep=True, separator=" ") or ""


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

    def inline_text(self, node: Any, in_article: bool, skip: frozenset[str] = frozenset(),
                    depth: int = 0) -> str:
        if depth > MAX_DEPTH:
            return _flat_text(node)
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
                out.append(sep + self.inline_text(child, in_article, skip, depth + 1) + sep)
        return "".join(out)

    def walk(self, node: Any, in_article: bool, depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            self._inline.append(_flat_text(node))
            self._flush()
            return
        for child in node.iter(include_text=True):
            tag = child.tag
            if tag == "-text":
                self._inline.append(child.text_content or "")
                continue
            if tag.startswith(("_", "!")) or _is_boilerplate(child, in_article):
                continue
            if tag in _INLINE_TAGS:
                text = ("\u2028" if tag == "br"
                        else self.inline_text(child, in_article, depth=depth + 1))
                self._inline.append(text)
                continue
            self._flush()
            self.block(child, tag, in_article, depth + 1)
        self._flush()

    def block(self, node: Any, tag: str, in_article: bool, depth: int = 0) -> None:
        if tag in _HEADINGS:
            text = _collapse(self.inline_text(node, in_article, depth=depth)).replace("\n", " ")
            if text:
                self.pieces.append(Piece("heading", text, _HEADINGS[tag]))
        elif tag == "p":
            self.pieces.append(Piece("paragraph",
                                     _collapse(self.inline_text(node, in_article, depth=depth))))
        elif tag == "pre":
            lines = (node.text(deep=True) or "").expandtabs(4).splitlines()
            self.pieces.append(Piece("code", "\n".join(x.rstrip() for x in lines).strip("\n")))
        elif tag == "table":
            self.table(node, in_article, depth)
        elif tag in ("ul", "ol", "dl"):
            lines = self.list_lines(node, in_article, 0, depth)
            self.pieces.append(Piece("list", "\n".join(lines)))
        elif tag == "blockquote":
            inner = _HtmlWalker()
            inner.walk(node, in_article, depth)
            self.pieces.append(Piece("quote", "\n\n".join(p.text for p in inner.pieces)))
        elif tag != "hr":
            self.walk(node, in_article or tag == "article", depth)

    def list_lines(self, node: Any, in_article: bool, level: int, depth: int) -> list[str]:
        """Lines of a list ``level`` lists deep, ``depth`` elements into the page."""
        if depth > MAX_DEPTH:
            text = _collapse(_flat_text(node)).replace("\n", " ")
            return ["  " * level + "- " + text] if text else []
        lines: list[str] = []
        number = int(node.attributes.get("start") or 1) if node.tag == "ol" else 0
        pad = "  " * level
        for item in node.iter():
            if _is_boilerplate(item, in_article):
                continue
            text = _collapse(self.inline_text(item, in_article, frozenset({"ul", "ol", "dl"}),
                                              depth + 1))
            text = text.replace("\n", " ")
            if item.tag == "dd":
                marker = "  "
            elif node.tag == "ol":
                marker, number = f"{number}. ", number + 1
            else:
                marker = "- "
            if text:
                lines.append(pad + marker + text)
            for sub, below in _nested_lists(item):
                lines.extend(self.list_lines(sub, in_article, level + 1, depth + 1 + below))
        return lines

    def table(self, node: Any, in_article: bool, depth: int) -> None:
        """Rows become GFM table lines; a header row gets a separator so the
        chunker can repeat it when it splits the table."""
        caption = node.css_first("caption")
        if caption is not None:
            text = _collapse(self.inline_text(caption, in_article, depth=depth + 1))
            self.pieces.append(Piece("paragraph", text))
        rows: list[str] = []
        for i, tr in enumerate(_rows(node)):
            cells = [c for c in tr.iter() if c.tag in ("td", "th")]
            texts = [
                _collapse(self.inline_text(c, in_article, depth=depth + 2))
                .replace("\n", " ").replace("|", "\\|")
                for c in cells
            ]
            if not any(texts):
                continue
            rows.append("| " + " | ".join(texts) + " |")
            if i == 0 and cells and all(c.tag == "th" for c in cells):
                rows.append("| " + " | ".join("---" for _ in cells) + " |")
        if rows:
            self.pieces.append(Piece("table", "\n".join(rows)))


def _nested_lists(node: Any) -> Iterator[tuple[Any, int]]:
    """The outermost lists inside a list item, however deeply wrapped, with
    how many wrappers deep each is (iterative: any depth is safe)."""
    stack = [(child, 1) for child in reversed(list(node.iter()))]
    while stack:
        child, depth = stack.pop()
        if child.tag in ("ul", "ol", "dl"):
            yield child, depth
        else:
            stack.extend((c, depth + 1) for c in reversed(list(child.iter())))


def _rows(table: Any) -> Iterator[Any]:
    """The table's own rows (not those of tables inside its cells): children
    of the table or of its thead/tbody/tfoot, where the HTML5 parser puts them."""
    for child in table.iter():
        if child.tag == "tr":
            yield child
        elif child.tag in ("thead", "tbody", "tfoot"):
            yield from (r for r in child.iter() if r.tag == "tr")


def load_html(
    text: str, source: str, meta: dict[str, Any], title: str | None, modified: float | None
) -> LoadedDocument:
    from selectolax.lexbor import LexborHTMLParser

    _check_nesting(text)
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
