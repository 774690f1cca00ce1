"""Loaders on real fixture files: Markdown, HTML, PDF, JSONL and plain text.

tests/fixtures/rag/report.pdf was printed once from report.html beside it:
    chromium --headless --no-sandbox --disable-gpu --no-pdf-header-footer \
        --print-to-pdf=report.pdf report.html
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from seawall.rag.documents import LoadedDocument
from seawall.rag.loaders import (
    JsonlError,
    UnsupportedFormat,
    detect_format,
    load_bytes,
    load_path,
    load_text,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rag"


def assert_offsets(doc: LoadedDocument) -> None:
    """Every block's span is where its text is (a heading's span holds its text)."""
    last = -1
    for b in doc.blocks:
        span = doc.text[b.start : b.end]
        if b.kind == "heading":
            assert b.text in span or b.text.replace("`", "") in span.replace("`", ""), (b, span)
        else:
            assert span == b.text, (b, span)
        assert b.start > last  # reading order, no overlap
        last = b.end - 1


# ------------------------------------------------------------------ detection


@pytest.mark.parametrize(
    ("name", "content_type", "expected"),
    [
        ("guide.md", None, "markdown"),
        ("GUIDE.MARKDOWN", None, "markdown"),
        ("notes.txt", None, "text"),
        ("docs/index.html", None, "html"),
        ("page.htm", "text/plain", "html"),  # the extension wins
        ("report.pdf", None, "pdf"),
        ("dump.jsonl", None, "jsonl"),
        ("https://example.com/a/page.html?x=1#top", None, "html"),
        ("upload", "application/pdf", "pdf"),
        ("upload", "text/html; charset=utf-8", "html"),
        ("upload", "text/markdown", "markdown"),
        ("README", None, "text"),
    ],
)
def test_detect_format(name: str, content_type: str | None, expected: str) -> None:
    assert detect_format(name, content_type) == expected


def test_unknown_extension_is_text_only_if_it_decodes() -> None:
    assert detect_format("server.log", data="héllo wörld\n".encode()) == "text"
    with pytest.raises(UnsupportedFormat, match=r"image\.png.*not UTF-8 text"):
        detect_format("image.png", data=b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    assert issubclass(UnsupportedFormat, ValueError)


def test_binary_upload_is_rejected() -> None:
    with pytest.raises(UnsupportedFormat, match="archive.zip"):
        load_bytes(b"PK\x03\x04\x14\x00\x00\x00\x08\x00\xc3\x28", "archive.zip")
    with pytest.raises(UnsupportedFormat, match="not a readable PDF"):
        load_bytes(b"%PDF-1.7 but really not", "fake.pdf")
    with pytest.raises(UnsupportedFormat, match="unknown format 'docx'"):
        load_text("x", "a.docx", "docx")
    with pytest.raises(UnsupportedFormat, match="bytes"):
        load_text("%PDF", "a.pdf", "pdf")


# ------------------------------------------------------------------- markdown


def test_markdown_handbook() -> None:
    path = FIXTURES / "handbook.md"
    (doc,) = load_path(path)
    assert doc.format == "markdown"
    assert doc.title == "Seawall Operator Handbook"  # front matter beats the first H1
    assert doc.text == path.read_text()  # offsets refer to the file itself
    assert doc.modified == os.stat(path).st_mtime
    assert doc.metadata == {
        "path": str(path),
        "owner": "platform-team",
        "tags": ["operations", "gateway"],
        "updated": "2025-03-14",
    }
    headings = [(b.level, b.text) for b in doc.blocks if b.kind == "heading"]
    assert headings == [
        (1, "Install"),
        (2, "From source"),
        (2, "With Docker"),
        (1, "Configuration"),
        (2, "Rate limits"),
        (3, "Per-route overrides"),
        (1, "Troubleshooting"),
        (2, "Error codes"),
    ]
    kinds = [b.kind for b in doc.blocks if b.kind != "heading"]
    assert kinds == [
        "paragraph", "paragraph", "paragraph", "paragraph", "code", "paragraph", "list",
        "paragraph", "paragraph", "table", "quote", "paragraph", "paragraph", "list",
    ]  # fmt: skip
    assert_offsets(doc)
    assert doc.blocks[0].start > doc.text.index("---\n\n")  # front matter is no block
    code = next(b for b in doc.blocks if b.kind == "code")
    assert code.text.startswith("```bash\ngit clone") and code.text.endswith("--port 8080\n```")
    assert len(code.text.splitlines()) == 12
    table = next(b for b in doc.blocks if b.kind == "table")
    assert table.text.splitlines()[0].startswith("| Tier ")
    assert table.text.splitlines()[-1].startswith("| enterprise |")
    install = next(b for b in doc.blocks if b.kind == "heading" and b.text == "Install")
    assert doc.text[install.start : install.end] == "# Install"


def test_markdown_title_falls_back_to_h1_then_stem() -> None:
    (doc,) = load_text("Intro.\n\n# Real `Title`\n\nBody.", "notes/guide.md", "markdown")
    assert doc.title == "Real Title"
    (doc,) = load_text("## Only a section\n\nBody.", "notes/guide.md", "markdown")
    assert doc.title == "guide"
    (doc,) = load_text("# H\n", "g.md", "markdown", title="Given")
    assert doc.title == "Given"


def test_markdown_offsets_survive_crlf_and_setext() -> None:
    text = "Title\r\n=====\r\n\r\nFirst para\r\nwraps.\r\n\r\n- one\r\n- two\r\n"
    (doc,) = load_bytes(text.encode(), "win.md")
    assert [(b.kind, b.text) for b in doc.blocks] == [
        ("heading", "Title"),
        ("paragraph", "First para\r\nwraps."),
        ("list", "- one\r\n- two"),
    ]
    assert_offsets(doc)


# ----------------------------------------------------------------------- html


def test_html_page_strips_boilerplate() -> None:
    (doc,) = load_path(FIXTURES / "page.html")
    assert doc.format == "html"
    assert doc.title == "Caching responses | Seawall Docs"
    for junk in [
        "Getting started",  # nav
        "Pricing",
        "analytics",  # script
        "font-family",  # style
        "On this page",  # aside
        "newsletter",  # form
        "Privacy policy",  # footer
        "Seawall Docs",  # site header
    ]:
        assert junk not in doc.text, junk
    headings = [(b.level, b.text) for b in doc.blocks if b.kind == "heading"]
    assert headings == [
        (1, "Caching responses"),
        (2, "Exact cache"),
        (3, "Choosing a TTL"),
        (2, "Semantic cache"),
    ]
    assert_offsets(doc)
    assert "\n\n".join(b.text for b in doc.blocks) == doc.text  # blank lines between blocks
    para = next(b for b in doc.blocks if b.text.startswith("The exact cache"))
    assert para.text == (
        "The exact cache keys a response on the whole request: model, messages, "
        "temperature and tools. A hit is returned byte for byte."
    )  # whitespace collapsed, inline tags flattened
    table = next(b for b in doc.blocks if b.kind == "table")
    assert table.text.splitlines() == [
        "| Workload | Suggested TTL |",
        "| --- | --- |",
        "| Support answers | 1 day |",
        "| Code review | 1 hour |",
        "| News summaries | 5 minutes |",
    ]
    code = next(b for b in doc.blocks if b.kind == "code")
    assert code.text == (
        "cache:\n  semantic:\n    enabled: true\n    threshold: 0.92\n    scope: per-tenant"
    )
    lst = next(b for b in doc.blocks if b.kind == "list")
    assert lst.text.splitlines() == [
        "- Hits are logged with their similarity score.",
        "- Misses fall through to the exact cache.",
    ]


def test_html_without_article_uses_body_and_h1_title() -> None:
    html = """<html><body>
      <header><h1>Site name</h1></header>
      <nav><a href="/">Home</a></nav>
      <div class="cookie-banner">We use cookies.</div>
      <div><h1>Welcome</h1>Loose text <b>with</b><br>a break.
        <ol start="3"><li>Third<ul><li>nested</li></ul></li><li>Fourth</li></ol>
        <blockquote><p>Quoted one.</p><p>Quoted two.</p></blockquote>
      </div>
      <footer>Footer text</footer></body></html>"""
    (doc,) = load_text(html, "https://example.com/welcome.html", "html")
    assert doc.title == "Welcome"  # no <title>: the first h1 of the content
    assert [(b.kind, b.text) for b in doc.blocks] == [
        ("heading", "Welcome"),
        ("paragraph", "Loose text with\na break."),
        ("list", "3. Third\n  - nested\n4. Fourth"),
        ("quote", "Quoted one.\n\nQuoted two."),
    ]
    assert "cookies" not in doc.text and "Footer" not in doc.text and "Home" not in doc.text


# ------------------------------------------------------------------------ pdf


def test_pdf_report_pages_and_headings() -> None:
    path = FIXTURES / "report.pdf"
    assert (FIXTURES / "report.html").exists()  # the source it was printed from
    (doc,) = load_path(path)
    assert doc.format == "pdf"
    assert doc.title == "Seawall incident review"  # from the PDF's metadata
    assert doc.metadata["pages"] == 3
    assert_offsets(doc)
    assert "\n\n".join(b.text for b in doc.blocks) == doc.text
    headings = [(b.level, b.text, b.page) for b in doc.blocks if b.kind == "heading"]
    assert headings == [
        (1, "Incident review: cache stampede", 1),
        (2, "Timeline", 1),
        (2, "Root cause", 2),
        (2, "Follow-up actions", 2),
        (2, "Appendix", 3),
    ]
    assert all(b.page in (1, 2, 3) for b in doc.blocks)
    first = next(b for b in doc.blocks if b.kind == "paragraph")
    assert first.page == 1
    assert first.text == (
        "On the morning of the incident, a configuration change lowered the semantic cache "
        "threshold for every tenant at once. Within minutes the hit rate fell and the gateway "
        "forwarded almost every prompt to the upstream providers."
    )  # lines unwrapped, the "fi" ligature undone
    root = [b.text for b in doc.blocks if b.page == 2 and b.kind == "paragraph"]
    assert root[0].startswith("The threshold was validated") and root[1].startswith("Nobody")
    code = next(b for b in doc.blocks if b.kind == "code")
    assert code.page == 2
    assert code.text.splitlines() == [
        "seawall config apply --tenant acme --dry-run",
        "seawall config apply --tenant acme",
    ]
    assert doc.blocks[-1].page == 3 and "third page" in doc.blocks[-1].text


# ---------------------------------------------------------------------- jsonl


def test_jsonl_records() -> None:
    path = FIXTURES / "records.jsonl"
    docs = load_path(path, metadata={"origin": "kb"})
    assert [d.source for d in docs] == [f"{path}#kb-101", f"{path}#kb-102", f"{path}#3"]
    assert [d.title for d in docs] == ["Rotating API keys", "Draining a node", "records#3"]
    assert docs[0].metadata == {
        "path": str(path),
        "origin": "kb",
        "team": "security",
        "tags": ["keys", "rotation"],
        "year": 2024,
    }
    assert docs[2].metadata == {"path": str(path), "origin": "kb", "team": "docs", "draft": True}
    assert all(d.format == "jsonl" for d in docs)
    assert [b.text for b in docs[0].blocks] == [
        "Rotate a key by creating the new key first, deploying it to every client, and only "
        "then revoking the old one.",
        "The gateway accepts both keys during the overlap.",
    ]
    for d in docs:
        assert_offsets(d)
        assert "text" not in d.metadata and "id" not in d.metadata


def test_jsonl_custom_text_field() -> None:
    data = b'{"body": "Hello there.", "id": 7}\n\n{"body": "Second.", "lang": "en"}\n'
    docs = load_bytes(data, "feed.jsonl", text_field="body", title="Feed")
    assert [(d.source, d.title, d.text) for d in docs] == [
        ("feed.jsonl#7", "Feed", "Hello there."),
        ("feed.jsonl#3", "Feed", "Second."),
    ]
    assert docs[1].metadata == {"lang": "en"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"text": "fine"}\n{"text": "broken",\n', r"bad\.jsonl line 2: invalid JSON"),
        (b'{"text": "fine"}\n\n[1, 2]\n', r"bad\.jsonl line 3: expected a JSON object"),
        (b'{"title": "no text"}\n', r"bad\.jsonl line 1: missing string field 'text'"),
        (b'{"text": 42}\n', r"bad\.jsonl line 1: missing string field 'text'"),
    ],
)
def test_malformed_jsonl_names_file_and_line(data: bytes, message: str) -> None:
    with pytest.raises(JsonlError, match=message):
        load_bytes(data, "bad.jsonl")


# ----------------------------------------------------------------- plain text


def test_plain_text_paragraphs_and_lists() -> None:
    text = "  Opening line\ncontinues here.\n\n\n- first\n- second\n\nClosing.\n"
    (doc,) = load_bytes(text.encode("utf-8-sig"), "notes/todo.txt", metadata={"k": 1})
    assert doc.title == "todo"
    assert doc.text == text  # the BOM is dropped, nothing else changes
    assert [(b.kind, b.text) for b in doc.blocks] == [
        ("paragraph", "Opening line\ncontinues here."),
        ("list", "- first\n- second"),
        ("paragraph", "Closing."),
    ]
    assert doc.metadata == {"k": 1}
    assert_offsets(doc)


def test_format_override_and_latin1_text() -> None:
    (doc,) = load_bytes(b"# Heading\n\nBody", "upload.bin", "markdown")
    assert doc.format == "markdown" and doc.title == "Heading"
    (doc,) = load_bytes("caf\xe9 cr\xe8me".encode("latin-1"), "menu.txt")
    assert doc.text == "café crème"
    (doc,) = load_bytes("# Über\n\nText".encode("utf-16"), "de.md")
    assert doc.title == "Über"
    with pytest.raises(UnsupportedFormat, match=r"shot\.txt: binary content"):
        load_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "shot.txt")


def test_encrypted_and_textless_pdfs() -> None:
    import io

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(FIXTURES / "report.pdf"))
    writer.encrypt("secret", algorithm="RC4-128")
    locked = io.BytesIO()
    writer.write(locked)
    with pytest.raises(UnsupportedFormat, match="locked.pdf: the PDF is encrypted"):
        load_bytes(locked.getvalue(), "locked.pdf")

    blank = PdfWriter()
    blank.add_blank_page(200, 200)  # what a scan without OCR looks like: no text layer
    out = io.BytesIO()
    blank.write(out)
    (doc,) = load_bytes(out.getvalue(), "scan.pdf")
    assert (doc.text, doc.blocks, doc.title) == ("", [], "scan")
