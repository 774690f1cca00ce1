"""Canary state with compare-and-set (ExperimentStore): a save that expects
the revision it read wins once; a second writer with the same revision loses.
On both backends (the main store of :class:`Stores`)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from seawall.store.base import Store
from seawall.store.factory import Stores
from seawall.store.sqlite import SqliteStore


@pytest.fixture
async def store(stores: Stores) -> AsyncIterator[Store]:
    yield stores.main


async def test_concurrent_compare_and_set_lets_exactly_one_win(store: Store) -> None:
    import asyncio

    await store.save_experiment_state("race", {"step": 0})
    _, rev = await store.experiment_state("race")
    wins = await asyncio.gather(*(store.save_experiment_state("race", {"step": i},
                                                              expect_revision=rev)
                                  for i in range(8)))
    assert sum(w is not None for w in wins) == 1


async def test_compare_and_set_on_the_revision(store: Store) -> None:
    assert await store.experiment_state("c") == (None, 0)
    assert await store.save_experiment_state("c", {"step": 1}, expect_revision=0) == 1
    assert await store.save_experiment_state("c", {"step": 9}, expect_revision=0) is None
    assert await store.save_experiment_state("c", {"step": 2}, expect_revision=1) == 2
    assert await store.save_experiment_state("c", {"step": 9}, expect_revision=1) is None
    assert await store.experiment_state("c") == ({"step": 2}, 2)
    assert await store.save_experiment_state("c", {"step": 3}) == 3  # unconditional
    assert await store.experiment_states() == {"c": {"step": 3}}
    assert await store.save_experiment_state("d", {"step": 0}) == 1


async def test_internal_rows_are_kept_but_never_listed(store: Store) -> None:
    """The arm salt (seawall/experiments/service.py) must not leak through a listing."""
    assert await store.save_experiment_state("_seawall_salt", {"salt": "s" * 64},
                                             expect_revision=0) == 1
    assert await store.experiment_state("_seawall_salt") == ({"salt": "s" * 64}, 1)
    await store.save_experiment_state("c", {"step": 1})
    assert await store.experiment_states() == {"c": {"step": 1}}


async def test_an_older_sqlite_database_gains_the_revision(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE experiments (name TEXT PRIMARY KEY, state TEXT NOT NULL, "
                   "updated_at REAL NOT NULL)")
        db.execute("INSERT INTO experiments VALUES ('c', '{\"step\": 1}', 1.0)")
    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.experiment_state("c") == ({"step": 1}, 0)
        assert await store.save_experiment_state("c", {"step": 2}, expect_revision=0) == 1
    finally:
        await store.close()
