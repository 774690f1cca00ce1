"""The canary's quality guard across replicas: judge scores and ratings that
reach any replica are added to the window shared in Redis, and the lease
holder rolls the canary back on them; every replica draws arms with the same
salt, made once and kept in the store (real Redis, the SQLite store shared
by two services in one process, as tests/integration/test_change_notices.py)."""

from __future__ import annotations

from pathlib import Path

from seawall.config import parse_settings
from seawall.experiments.canary import Quality
from seawall.experiments.service import SALT_NAME
from tests.replicas import experiment_replicas


async def test_quality_reaching_any_replica_rolls_the_canary_back(redis_url: str,
                                                                 tmp_path: Path) -> None:
    settings = parse_settings({
        "data_dir": str(tmp_path),
        "providers": {"up": {"type": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": {"chat": {"provider": "up", "model": "a"},
                   "candidate": {"provider": "up", "model": "b"}},
        "experiments": {"rollout": {
            "model": "chat", "kind": "canary",
            "canary": {"steps": [10, 50, 100], "min_requests": 1000, "min_judged": 6,
                       "max_quality_drop": 0.2},
            "variants": [{"name": "stable"}, {"name": "next", "model": "candidate"}]}},
    }, env={})
    async with experiment_replicas(settings, tmp_path / "seawall.db",
                                   redis_url) as (first, second):
        assert first.shared is not None and second.shared is not None
        # One salt for every replica, made by the first and kept in the store.
        assert len(first.salt) == 64 and first.salt == second.salt
        saved, _ = await first.store.experiment_state(SALT_NAME)
        assert saved == {"salt": first.salt}
        assert first.lease.held and not second.lease.held
        # Scores reach the replica that does not decide (its judges, its feedback route).
        for _ in range(6):
            assert second.observe_quality("rollout=stable", "acme", Quality(1, 0.9))
            assert second.observe_quality("rollout=next", "acme", Quality(1, 0.3))
        assert not second.observe_quality("rollout=other", "acme", Quality(1, 0.3))
        assert not second.observe_quality(None, "acme", Quality(1, 0.3))
        await second.shared.round()  # handed in; not the holder: no verdict
        assert second.canaries["rollout"].state.status == "running"
        await first.shared.round()
        await first.settle()
        state = first.canaries["rollout"].state
        assert state.status == "rolled_back", state
        assert state.reason is not None and state.reason.startswith(
            "judged quality 0.30 against the baseline's 0.90")
        assert state.history[-1]["candidate"]["judged"] == 6
        assert state.history[-1]["candidate"]["replicas"] == "all"
