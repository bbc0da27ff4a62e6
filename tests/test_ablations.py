"""Ablations on the Stackelberg PPO trainer: the Dictator ablation (the LLM leader with obedient
heuristic UEs, paper §V) and agentic UEs beside legacy ones (paper Table VII)."""

from __future__ import annotations

import pytest
import torch
from test_trainer import assert_only_role_changed, make_trainer, run_config, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")

CELL_3 = {"cell": {"ue_counts": [3], "n_rbgs": 2, "episode_ttis": 5}}


def test_dictator_ablation_trains_the_leader_alone_with_obedient_ues(tiny_path, tmp_path):
    trainer = make_trainer(run_config(tiny_path, tmp_path, scenario=CELL_3,
                                      follower_policy="dictator"))
    leader, follower, kpis = trainer.worker.collect(0)
    assert len(leader) == 4 * 5 and len(follower) == 0  # E * T leader decisions, no UE ones
    for batch in kpis:  # obedient UEs send exactly on their DCM bits: one sender per RBG
        assert (batch["collision_rate"] == 0).all()
    before = snapshot(trainer.policy)
    record = trainer.train_epoch(0)
    assert "leader/loss" in record and not any(k.startswith("follower/") for k in record)
    assert_only_role_changed(trainer.policy, before, snapshot(trainer.policy), "leader")


def test_legacy_ues_play_s_aloha_and_only_agentic_ues_are_recorded(tiny_path, tmp_path):
    trainer = make_trainer(run_config(tiny_path, tmp_path, scenario=CELL_3, legacy_ues=1))
    leader, follower, _ = trainer.worker.collect(0)
    assert len(leader) == 4 * 5
    assert len(follower) == 4 * 5 * 2  # E * T * (I - 1 legacy)
    assert len(follower.rewards) == len(follower.advantages) == len(follower)
    all_legacy = make_trainer(run_config(tiny_path, tmp_path / "b", scenario=CELL_3,
                                         legacy_ues=3))
    assert len(all_legacy.worker.collect(0)[1]) == 0
    record = all_legacy.train_epoch(0)
    assert record["follower/decisions"] == 0.0
    assert torch.isfinite(torch.tensor(record["leader/loss"]))
