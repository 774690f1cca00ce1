"""``seawall ingest``, ``seawall collections`` and ``seawall search``: RAG from
the shell, working on the RAG store file directly (safe beside a running
server: it notices the new generation and loads the index built here)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import orjson

from seawall.audit.cli import cli_auditor
from seawall.audit.record import collection_state
from seawall.cli_common import config_option, open_stores, settings_from, walk_files
from seawall.config import Settings
from seawall.ml.tokens import TokenCounter
from seawall.pipeline.stages import ANONYMOUS_TENANT, MASTER
from seawall.rag.documents import LoadedDocument
from seawall.rag.loaders import UnsupportedFormat, load_bytes
from seawall.rag.service import RagService, SearchRequest

BATCH_DOCUMENTS = 32
SUFFIXES = {".md", ".markdown", ".txt", ".text", ".html", ".htm", ".pdf", ".jsonl"}

tenant_option = click.option(
    "--tenant", default=None,
    help="Tenant owning the collection (default: the master key's tenant, 'default', when "
         "auth.master_key is set, else 'anonymous', the tenant of keyless loopback calls).")


def _tenant(settings: Settings, tenant: str | None) -> str:
    if tenant:
        return tenant
    return MASTER.tenant if settings.auth.master_key else ANONYMOUS_TENANT


@contextlib.contextmanager
def _service(settings: Settings) -> Iterator[RagService]:
    """The RAG service on the configured store (SQLite files or the shared
    Postgres), closed on the way out."""
    with open_stores(settings) as stores:
        rag = RagService(settings.rag, stores.rag_store(), TokenCounter())
        try:
            yield rag
        finally:
            rag.close()


def source_of(path: Path) -> str:
    """A document's source: its path relative to the working directory when it
    is below it (stable across runs from the same place), else absolute."""
    full = path.resolve()
    try:
        return full.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return full.as_posix()


def _parse_metadata(pairs: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--metadata")
        try:
            out[key] = orjson.loads(value)  # numbers, booleans and lists stay typed
        except orjson.JSONDecodeError:
            out[key] = value
    return out


@click.command("ingest")
@config_option
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--collection", "-C", required=True, help="Collection to add the documents to.")
@tenant_option
@click.option("--metadata", "-m", multiple=True, metavar="KEY=VALUE",
              help="A field added to every document's metadata, for filters (repeatable).")
@click.option("--prune", is_flag=True,
              help="Delete documents whose file under PATHS no longer exists.")
@click.option("--url", default=None, metavar="URL",
              help="Send the files to the gateway at URL (e.g. http://127.0.0.1:8000) over "
                   "HTTP instead of writing the local store; the key's tenant owns them.")
@click.option("--key", envvar="SEAWALL_API_KEY", default=None,
              help="With --url: the API key to send (default: $SEAWALL_API_KEY; none for "
                   "anonymous loopback).")
@click.option("--batch-files", type=click.IntRange(1, 1000), default=BATCH_DOCUMENTS,
              show_default=True, help="With --url: files per request (<= rag.max_files).")
@click.option("--batch-mb", type=click.FloatRange(min=0.01), default=8.0, show_default=True,
              help="With --url: MB per request (keep under rag.max_upload_bytes; a larger "
                   "file goes alone).")
def ingest(config: str | None, paths: tuple[Path, ...], collection: str, tenant: str | None,
           metadata: tuple[str, ...], prune: bool, url: str | None, key: str | None,
           batch_files: int, batch_mb: float) -> None:
    """Add files (Markdown, text, HTML, PDF, JSONL) or folders to a collection.

    Idempotent and resumable: unchanged files are skipped, changed files replace
    their old chunks, and each file is committed on its own, so an interrupted
    run picks up where it stopped. With --url, the files go to a running
    gateway (in batches, waiting out its ingestion quota) instead.
    """
    extra = _parse_metadata(metadata)
    if url is not None:
        if tenant or prune:
            raise click.UsageError("--tenant and --prune work on the local store, not with "
                                   "--url (the key decides the tenant)")
        _ingest_remote(paths, collection, extra, url, key, batch_files,
                       int(batch_mb * 1024 * 1024))
        return
    settings = settings_from(config)
    files = list(walk_files(paths, SUFFIXES))
    counts = {"added": 0, "replaced": 0, "unchanged": 0, "failed": 0, "chunks": 0}
    with _service(settings) as rag, cli_auditor(settings) as audit:
        owner = _tenant(settings, tenant)
        existed = rag.store.collection_id(owner, collection) is not None
        info = rag.store.ensure_collection(owner, collection)
        if not existed:
            audit.record("collection.create", tenant=owner, target=collection,
                         after=collection_state(info))
        known = rag.store.sources(info.id)
        seen: set[str] = set()
        batch: list[LoadedDocument] = []

        def flush() -> None:
            for result in rag.ingestor.ingest_many(info.id, batch, known):
                counts[result.status] += 1
                counts["chunks"] += result.chunks
            batch.clear()

        try:
            with click.progressbar(files, label=f"ingest → {collection}", file=sys.stderr,
                                   item_show_func=lambda p: p.name if p else None) as bar:
                for path in bar:
                    source = source_of(path)
                    seen.add(source)
                    try:
                        batch += load_bytes(path.read_bytes(), source,
                                            metadata={"path": source, **extra},
                                            modified=path.stat().st_mtime)
                    except (UnsupportedFormat, ValueError, OSError) as e:
                        counts["failed"] += 1
                        click.echo(f"\nskipped {path}: {e}", err=True)
                        continue
                    # Embed several documents together (fewer, fuller model calls);
                    # an interruption loses at most this batch's work.
                    if len(batch) >= BATCH_DOCUMENTS:
                        flush()
                flush()
        except KeyboardInterrupt:
            click.echo(f"\ninterrupted: {counts['added'] + counts['replaced']} documents "
                       "stored; run the same command again to resume", err=True)
            sys.exit(130)
        pruned = 0
        if prune:
            roots = [source_of(p) for p in paths]
            gone = [s for s in known if s.split("#", 1)[0] not in seen
                    and any(s == r or s.startswith(r.rstrip("/") + "/") for r in roots)]
            pruned = rag.store.delete_documents(info.id, sources=gone)
        index = rag.index_for(info.id)  # built and saved now: the server just loads it
    click.echo(f"{collection}: {counts['added']} added, {counts['replaced']} replaced, "
               f"{counts['unchanged']} unchanged, {counts['failed']} failed, {pruned} pruned; "
               f"{counts['chunks']} new chunks, {len(index)} in the index", err=True)
    if counts["failed"]:
        sys.exit(1)


def _ingest_remote(paths: tuple[Path, ...], collection: str, extra: dict[str, Any], url: str,
                   key: str | None, batch_files: int, batch_bytes: int) -> None:
    """``ingest --url``: the same files, sent in batches; one line per file on
    stdout (status, documents, chunks, source), the summary on stderr."""
    import aiohttp

    from seawall.rag.remote import Outcome, RemoteError, RemoteIngest, documents_url

    files = list(walk_files(paths, SUFFIXES))
    click.echo(f"sending {len(files)} files to {documents_url(url, collection)}", err=True)
    outcomes: list[Outcome] = []

    def show(done: list[Outcome]) -> None:
        for o in done:
            docs = sum(o.documents.values())
            click.echo(f"{o.status}\t{docs}\t{o.chunks}\t{o.source}"
                       + (f"\t{o.detail}" if o.detail else ""))
        outcomes.extend(done)

    async def go() -> None:
        timeout = aiohttp.ClientTimeout(sock_connect=10, sock_read=600)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            client = RemoteIngest(session, url, key, collection, extra,
                                  lambda line: click.echo(f"\n{line}", err=True))
            batch: list[tuple[str, bytes]] = []
            size = 0
            with click.progressbar(files, label=f"ingest → {collection} at {url}",
                                   file=sys.stderr,
                                   item_show_func=lambda p: p.name if p else None) as bar:
                for path in bar:
                    source = source_of(path)
                    try:
                        data = path.read_bytes()
                    except OSError as e:
                        show([Outcome(source, "failed", {}, detail=str(e))])
                        continue
                    if batch and (len(batch) >= batch_files or size + len(data) > batch_bytes):
                        show(await client.send(batch))
                        batch, size = [], 0
                    batch.append((source, data))
                    size += len(data)
                if batch:
                    show(await client.send(batch))

    try:
        asyncio.run(go())
    except RemoteError as e:
        raise click.ClickException(f"{e} ({len(outcomes)} of {len(files)} files done)"
                                   ) from None
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted after {len(outcomes)} of {len(files)} files; run the same "
                   "command again to resume (unchanged files are skipped)", err=True)
        sys.exit(130)
    counts = {"added": 0, "replaced": 0, "unchanged": 0}
    for o in outcomes:
        for status, n in o.documents.items():
            counts[status] = counts.get(status, 0) + n
    failed = [o for o in outcomes if o.status == "failed"]
    click.echo(f"{collection}: {counts['added']} added, {counts['replaced']} replaced, "
               f"{counts['unchanged']} unchanged, {len(failed)} failed; "
               f"{sum(o.chunks for o in outcomes)} new chunks", err=True)
    for o in failed:
        click.echo(f"failed {o.source}: {o.detail}", err=True)
    if failed:
        sys.exit(1)


@click.group("collections")
def collections() -> None:
    """List, inspect and delete RAG collections."""


@collections.command("list")
@config_option
@tenant_option
def collections_list(config: str | None, tenant: str | None) -> None:
    settings = settings_from(config)
    with _service(settings) as rag:
        rows = rag.store.collections(_tenant(settings, tenant))
    if not rows:
        click.echo("no collections", err=True)
        return
    click.echo(f"{'name':24} {'documents':>9} {'chunks':>8}  generation")
    for c in rows:
        click.echo(f"{c.name:24} {c.documents:>9} {c.chunks:>8}  {c.generation}")


@collections.command("show")
@config_option
@tenant_option
@click.argument("name")
@click.option("--limit", default=50, show_default=True)
def collections_show(config: str | None, tenant: str | None, name: str, limit: int) -> None:
    """A collection's documents."""
    settings = settings_from(config)
    with _service(settings) as rag:
        info = rag.store.collection(_tenant(settings, tenant), name)
        if info is None:
            raise click.ClickException(f"no collection named {name!r}")
        docs = rag.store.documents(info.id, limit=limit)
    click.echo(f"{name}: {info.documents} documents, {info.chunks} chunks")
    for d in docs:
        click.echo(f"{d.id:>6}  {d.chunk_count:>4} chunks  {d.format:8}  {d.source}")


@collections.command("delete")
@config_option
@tenant_option
@click.argument("name")
@click.option("--source", "sources", multiple=True,
              help="Delete only this document (repeatable); default: the whole collection.")
def collections_delete(config: str | None, tenant: str | None, name: str,
                       sources: tuple[str, ...]) -> None:
    settings = settings_from(config)
    with _service(settings) as rag, cli_auditor(settings) as audit:
        t = _tenant(settings, tenant)
        info = rag.store.collection(t, name)
        if info is None:
            raise click.ClickException(f"no collection named {name!r}")
        if sources:
            n = rag.store.delete_documents(info.id, sources=sources)
            audit.record("collection.documents.delete", tenant=t, target=name,
                         before=collection_state(info),
                         after={"sources": list(sources), "deleted": n})
            click.echo(f"deleted {n} of {len(sources)} documents from {name}", err=True)
        else:
            rag.store.delete_collection(t, name)
            rag.forget_index(info.id)
            audit.record("collection.delete", tenant=t, target=name,
                         before=collection_state(info))
            click.echo(f"deleted collection {name} ({info.documents} documents)", err=True)


@click.command("search")
@config_option
@tenant_option
@click.argument("collection")
@click.argument("query")
@click.option("--top-k", "-k", default=5, show_default=True)
@click.option("--mode", type=click.Choice(["hybrid", "bm25", "dense"]), default=None)
@click.option("--filter", "filter_json", default=None, help="A metadata filter (JSON).")
@click.option("--json", "as_json", is_flag=True, help="The hits as JSON.")
def search(config: str | None, tenant: str | None, collection: str, query: str, top_k: int,
           mode: str | None, filter_json: str | None, as_json: bool) -> None:
    """Search a collection as the API would."""
    settings = settings_from(config)
    with _service(settings) as rag:

        async def go() -> Any:
            try:
                return await rag.search(_tenant(settings, tenant), collection, SearchRequest(
                    query=query, top_k=top_k, mode=mode,
                    filter=orjson.loads(filter_json) if filter_json else None))
            finally:
                await rag.aclose()

        try:
            result = asyncio.run(go())
        except Exception as e:
            raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(orjson.dumps([h.public(i + 1) for i, h in enumerate(result.hits)],
                                option=orjson.OPT_INDENT_2).decode())
        return
    for i, h in enumerate(result.hits, start=1):
        where = " > ".join(h.chunk.heading_path)
        click.echo(f"{i}. [{h.score:.4f}] {h.chunk.source}" + (f" § {where}" if where else ""))
        click.echo("   " + h.chunk.text[:200].replace("\n", " "))
