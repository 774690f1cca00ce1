"""Structure-aware and fixed chunking on real fixture documents."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from seawall.rag.chunking import ChunkOptions, chunk_document
from seawall.rag.documents import Chunk, LoadedDocument
from seawall.rag.loaders import load_path, load_text

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rag"


def words(text: str) -> int:
    """A transparent token counter: expectations can be worked out by hand."""
    return len(text.split())


@pytest.fixture(scope="module")
def handbook() -> LoadedDocument:
    return load_path(FIXTURES / "handbook.md")[0]


@pytest.fixture(scope="module")
def tiktoken_count():
    from seawall.ml.tokens import TokenCounter

    return TokenCounter().count


def chunks_of(doc: LoadedDocument, **options: object) -> list[Chunk]:
    return chunk_document(doc, ChunkOptions(**options), words)  # type: ignore[arg-type]


def block_text(doc: LoadedDocument, kind: str, startswith: str = "") -> str:
    return next(b.text for b in doc.blocks if b.kind == kind and b.text.startswith(startswith))


# ------------------------------------------------------------------ structure


def test_heading_paths_follow_nesting(handbook: LoadedDocument) -> None:
    chunks = chunks_of(handbook, max_tokens=200, overlap_tokens=0)
    paths = [c.heading_path for c in chunks]
    assert paths == [
        [],
        ["Install"],
        ["Install", "From source"],
        ["Install", "With Docker"],
        ["Configuration"],
        ["Configuration", "Rate limits"],
        ["Configuration", "Rate limits", "Per-route overrides"],
        ["Troubleshooting"],
        ["Troubleshooting", "Error codes"],
    ]
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    # Headings are context for the caller, never part of a chunk's text.
    assert not any(c.text.lstrip().startswith("#") for c in chunks)
    rate = chunks[5]
    assert rate.text.startswith("Limits are enforced per API key")
    assert "| enterprise | 3000" in rate.text and "> Changing a limit" in rate.text


def test_markdown_chunk_text_is_the_exact_source_span(handbook: LoadedDocument) -> None:
    table = block_text(handbook, "table")
    header = "\n".join(table.splitlines()[:2]) + "\n"
    repeated = 0
    for max_tokens, overlap in [(200, 0), (60, 12), (40, 8), (25, 5)]:
        for c in chunks_of(handbook, max_tokens=max_tokens, overlap_tokens=overlap):
            span = handbook.text[c.start : c.end]
            if c.text != span:  # only a table piece repeating its header row differs
                assert c.text == header + span
                repeated += 1
            assert c.tokens == words(c.text) <= max_tokens
    assert repeated >= 1  # the 41-word table is split at 25 and 40


@pytest.mark.parametrize("max_tokens", [32, 45, 60, 120])
def test_code_block_kept_whole_when_it_fits(handbook: LoadedDocument, max_tokens: int) -> None:
    code = block_text(handbook, "code", "```bash")
    assert words(code) <= max_tokens
    chunks = chunks_of(handbook, max_tokens=max_tokens, overlap_tokens=8)
    holding = [c for c in chunks if "git clone" in c.text]
    assert len(holding) == 1
    assert code in holding[0].text
    assert holding[0].heading_path == ["Install", "From source"]


def test_code_block_bigger_than_a_chunk_is_cut_between_lines(handbook: LoadedDocument) -> None:
    code = next(b for b in handbook.blocks if b.kind == "code")
    chunks = chunks_of(handbook, max_tokens=12, overlap_tokens=0)
    pieces = [c for c in chunks if c.start < code.end and c.end > code.start]
    assert len(pieces) >= 3
    lines = set(code.text.splitlines())
    for c in pieces:
        own = handbook.text[max(c.start, code.start) : min(c.end, code.end)]
        assert all(line in lines for line in own.splitlines()), own
    covered = "\n".join(
        handbook.text[max(c.start, code.start) : min(c.end, code.end)] for c in pieces
    )
    assert covered == code.text


def test_table_split_between_rows_with_header_repeated() -> None:
    rows = "\n".join(f"| region-{i:02d} | {i * 3} ms | healthy |" for i in range(40))
    source = f"# Latency\n\nMeasured at noon.\n\n| Region | p50 | State |\n|---|---|---|\n{rows}\n"
    doc = load_text(source, "latency.md", "markdown")[0]
    chunks = chunks_of(doc, max_tokens=60, overlap_tokens=0)
    table_lines = set(source.splitlines()[4:])
    seen: list[str] = []
    for c in chunks:
        assert c.heading_path == ["Latency"]
        assert c.tokens <= 60
        body = c.text.removeprefix("Measured at noon.\n\n")
        lines = body.splitlines()
        assert lines[:2] == ["| Region | p50 | State |", "|---|---|---|"]  # header repeated
        assert all(line in table_lines for line in lines)  # never cut inside a row
        seen += [ln for ln in lines[2:]]
    assert seen == rows.splitlines()  # every row exactly once, in order
    assert len(chunks) >= 4
    # A continuation piece points at its rows; the header it repeats sits before them.
    assert doc.text[chunks[1].start : chunks[1].end] == "\n".join(chunks[1].text.splitlines()[2:])


def test_long_paragraph_split_at_sentence_boundaries(handbook: LoadedDocument) -> None:
    paragraph = block_text(handbook, "paragraph", "When clients report slow answers")
    assert words(paragraph) > 100
    chunks = chunks_of(handbook, max_tokens=50, overlap_tokens=0)
    pieces = [c for c in chunks if c.heading_path == ["Troubleshooting"]]
    assert len(pieces) >= 4
    for c in pieces:
        assert c.tokens <= 50
        assert c.text[0].isupper() and c.text.endswith(".")
    assert " ".join(c.text for c in pieces) == " ".join(paragraph.split())


def test_overlap_repeats_trailing_sentences_within_a_section(handbook: LoadedDocument) -> None:
    chunks = chunks_of(handbook, max_tokens=50, overlap_tokens=20)
    overlapped = 0
    for prev, c in zip(chunks, chunks[1:], strict=False):
        if c.heading_path != prev.heading_path:
            assert c.start > prev.end  # never repeat text from another section
            continue
        if c.start < prev.end:
            overlapped += 1
            repeated = handbook.text[c.start : prev.end]
            assert prev.text.endswith(repeated)
            assert c.text.startswith(repeated)
            assert 0 < words(repeated) <= 20
            assert handbook.text[c.start - 2 : c.start] in (". ", ".\n") or (
                handbook.text[c.start - 1] == "\n"
            )  # starts at a sentence or line boundary
        assert c.tokens <= 50
    assert overlapped >= 3


def test_no_overlap_when_disabled(handbook: LoadedDocument) -> None:
    chunks = chunks_of(handbook, max_tokens=50, overlap_tokens=0)
    for prev, c in zip(chunks, chunks[1:], strict=False):
        assert c.start >= prev.end


def test_small_tail_merges_into_previous_chunk() -> None:
    a = "Alpha" + " alpha" * 12 + "."  # 13 words
    b = "Bravo" + " bravo" * 4 + "."  # 5
    c = "Charlie" + " charlie" * 11 + "."  # 12
    d = "Delta delta delta end."  # 4
    doc = load_text(f"# S\n\n{a} {b} {c} {d}\n", "s.md", "markdown")[0]
    no_merge = chunks_of(doc, max_tokens=20, overlap_tokens=6, min_tokens=0)
    assert [ch.text for ch in no_merge] == [f"{a} {b}", f"{b} {c}", d]
    merged = chunks_of(doc, max_tokens=20, overlap_tokens=6, min_tokens=5)
    # The 4-word tail joins the chunk before it, which gives up its overlap to fit.
    assert [ch.text for ch in merged] == [f"{a} {b}", f"{c} {d}"]
    assert all(ch.tokens <= 20 for ch in merged)


def test_giant_unbroken_token_is_cut_within_budget(tiktoken_count) -> None:
    blob = "QUJD" * 3000
    doc = load_text(f"Key material:\n\n{blob}\n\nEnd of key.", "k.txt")[0]
    options = ChunkOptions(max_tokens=64, overlap_tokens=0)
    chunks = chunk_document(doc, options, tiktoken_count)
    assert len(chunks) > 10
    assert all(c.tokens <= 64 for c in chunks)
    assert "".join("".join(c.text.split()) for c in chunks) == "".join(doc.text.split())
    assert chunks[0].text.startswith("Key material:")
    assert chunks[-1].text.endswith("End of key.")


FIXTURE_FILES = ["handbook.md", "page.html", "report.pdf", "records.jsonl"]


@pytest.mark.parametrize("name", FIXTURE_FILES)
@pytest.mark.parametrize("strategy", ["structure", "fixed"])
def test_real_token_counts_stay_within_budget(name: str, strategy: str, tiktoken_count) -> None:
    options = ChunkOptions(strategy=strategy, max_tokens=48, overlap_tokens=8, min_tokens=8)  # type: ignore[arg-type]
    for doc in load_path(FIXTURES / name):
        chunks = chunk_document(doc, options, tiktoken_count)
        assert chunks
        for i, c in enumerate(chunks):
            assert c.ordinal == i
            assert c.tokens == tiktoken_count(c.text) <= 48
            assert doc.text[c.start : c.end] == c.text  # all span-backed here


def test_html_chunks_carry_sections() -> None:
    doc = load_path(FIXTURES / "page.html")[0]
    chunks = chunks_of(doc, max_tokens=200, overlap_tokens=0)
    by_path = {tuple(c.heading_path): c.text for c in chunks}
    ttl = by_path[("Caching responses", "Exact cache", "Choosing a TTL")]
    assert "| News summaries | 5 minutes |" in ttl
    semantic = by_path[("Caching responses", "Semantic cache")]
    assert "    threshold: 0.92" in semantic and "- Misses fall through" in semantic


def test_pdf_chunks_know_their_page() -> None:
    doc = load_path(FIXTURES / "report.pdf")[0]
    chunks = chunks_of(doc, max_tokens=200, overlap_tokens=0)
    pages = {c.heading_path[-1]: c.page for c in chunks}
    assert pages["Timeline"] == 1
    assert pages["Root cause"] == 2
    assert pages["Appendix"] == 3
    fixed = chunks_of(doc, strategy="fixed", max_tokens=30, overlap_tokens=5)
    assert fixed[0].page == 1 and fixed[-1].page == 3


def test_document_without_blocks_still_chunks() -> None:
    doc = LoadedDocument("raw", "text", "raw", "  One sentence. Another one.  ", [])
    chunks = chunks_of(doc)
    assert [(c.text, c.start, c.end) for c in chunks] == [("One sentence. Another one.", 2, 28)]
    assert chunks_of(LoadedDocument("e", "text", "e", "", [])) == []


# ---------------------------------------------------------------------- fixed


def test_fixed_strategy_is_a_sliding_window(handbook: LoadedDocument) -> None:
    chunks = chunks_of(handbook, strategy="fixed", max_tokens=40, overlap_tokens=10)
    assert len(chunks) > 10
    for prev, c in zip(chunks, chunks[1:], strict=False):
        assert c.heading_path == []
        assert handbook.text[c.start : c.end] == c.text
        assert c.tokens == words(c.text) <= 40
        repeated = handbook.text[c.start : prev.end]
        assert c.start < prev.end and 0 < words(repeated) <= 10
    # Structure is ignored: windows run across headings and code fences.
    assert any("# Install" in c.text for c in chunks)
    assert re.sub(r"\s+", " ", handbook.text).strip().endswith(chunks[-1].text.split()[-1])
    assert chunks[0].start == 0


def test_fixed_without_overlap_tiles_the_text(handbook: LoadedDocument) -> None:
    chunks = chunks_of(handbook, strategy="fixed", max_tokens=40, overlap_tokens=0)
    assert " ".join(c.text for c in chunks).split() == handbook.text.split()
    assert all(36 <= c.tokens <= 40 for c in chunks[:-1])  # windows are filled


# -------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tokens": 0}, "max_tokens must be positive"),
        ({"max_tokens": -5}, "max_tokens must be positive"),
        ({"overlap_tokens": -1}, "overlap_tokens must be >= 0"),
        ({"max_tokens": 64, "overlap_tokens": 64}, "must be smaller than max_tokens"),
        ({"min_tokens": -1}, "min_tokens must be >= 0"),
        ({"strategy": "semantic"}, "strategy must be"),
    ],
)
def test_chunk_options_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ChunkOptions(**kwargs)  # type: ignore[arg-type]


def test_chunk_options_defaults() -> None:
    options = ChunkOptions()
    assert (options.strategy, options.max_tokens, options.overlap_tokens, options.min_tokens) == (
        "structure",
        256,
        32,
        32,
    )
    with pytest.raises(AttributeError):
        options.max_tokens = 1  # type: ignore[misc]
