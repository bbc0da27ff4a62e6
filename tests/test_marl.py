"""MARL baselines (design §3, paper App. B-E): head shapes, MAPPO-G padding and truncation, G-MAC
over any I and its UE-order dependence, config errors, bit-identical resume, save/load, and a
seeded learning test per algorithm. Tiny networks on a tiny cell (I = 2, N = 2, T = 10)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from textgame.config import ConfigError, ScenarioConfig
from textgame.game import StackelbergGame
from textgame.metrics import summarize
from textgame.policies import RandomFollower, RandomLeader
from textgame.runner import run_episodes
from trainers.marl import MARLAgents, MARLConfig, MARLTrainer, load_marl_policies
from trainers.marl.bs_actors import GMACLeader
from trainers.marl.features import LeaderFeatures, gather_by_rank
from trainers.marl.policies import MARLFollower, MARLLeader

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_CELL = {"cell": {"ue_counts": [2], "n_rbgs": 2, "episode_ttis": 10}}
TINY = dict(scenario=TINY_CELL, ue_hidden=[16, 16], ue_latent=32, bs_hidden=[32], bs_latent=32,
            encoder_hidden=[16], embedding_dim=16, dcm_embedding_dim=4, gru_hidden=16,
            critic_hidden=[32], n_envs=8, minibatch_size=64, ppo_epochs=2, save_every=0)


def tiny_config(tmp_path=None, **changes) -> MARLConfig:
    out = {"output_dir": str(tmp_path)} if tmp_path is not None else {}
    return MARLConfig(**{**TINY, **out, **changes})


def cell(n_ues: int, n_rbgs: int = 2) -> ScenarioConfig:
    return ScenarioConfig.from_dict({"cell": {"ue_counts": [n_ues], "n_rbgs": n_rbgs,
                                              "episode_ttis": 10}})


def agents_for(algo: str, **changes) -> MARLAgents:
    torch.manual_seed(0)
    return MARLAgents(tiny_config(algo=algo, **changes))


class RecordingLeader(MARLLeader):
    """Keeps every DCM it sends, with the TTI's number of active UEs."""

    def act(self, obs):
        dcm = super().act(obs)
        self.sent = getattr(self, "sent", []) + [(dcm, obs.n_active.copy())]
        return dcm


# ------------------------------------------------------------------------------ shapes
def test_ue_actor_heads_have_exact_shapes():
    agents = agents_for("mappo")
    x = torch.zeros(3, 5, agents.follower_features().dim)  # (B, I_max, H * F_u)
    tx, ucm, bits = agents.follower_actor(x)
    assert tx.shape == (3, 5, 2) and ucm.shape == (3, 5, 4) and bits.shape == (3, 5, 2)
    out = agents.follower_actor.act(x, torch.Generator().manual_seed(0))
    assert out["transmit"].shape == out["ucm"].shape == out["logp"].shape == (3, 5)
    assert out["bitmap"].shape == (3, 5, 2)
    assert not (out["bitmap"] & (out["transmit"] == 0)[..., None]).any()  # sent = tx * bits


@pytest.mark.parametrize("algo", ["mappo", "gmac"])
def test_bs_actor_outputs_have_exact_shapes(algo):
    agents = agents_for(algo)
    feats = agents.leader_features()
    width = agents.leader_width(4)  # MAPPO: I_cap = 2; G-MAC: all 4 slots
    g, x = torch.zeros(3, feats.global_dim), torch.zeros(3, width, feats.ue_dim)
    mask = torch.ones(3, width, dtype=torch.bool)
    dcm, logp = agents.leader_actor.act(g, x, mask, torch.Generator().manual_seed(0))
    assert dcm.shape == (3, 2) and logp.shape == (3,)
    assert int(dcm.max()) <= width and int(dcm.min()) >= 0
    new_logp, entropy = agents.leader_actor.evaluate(g, x, mask, dcm)
    assert new_logp.shape == entropy.shape == (3,)
    torch.testing.assert_close(new_logp, logp)  # first PPO ratio is exactly 1
    if algo == "mappo":
        assert agents.leader_actor.logits(g, x, mask).shape == (3, 2, 1 + 2)  # (B, N, 1+I_cap)
    assert agents.leader_critic(g, x, mask).shape == (3,)


# ----------------------------------------------------------------------------- MAPPO-G
def _leader_obs(n_ues: int, ttis: int = 3):
    game = StackelbergGame(cell(n_ues), 4)
    obs, rng = game.reset(7), np.random.default_rng(0)
    leader, follower = RandomLeader(), RandomFollower()
    leader.reset(4, n_ues, 2, rng)
    follower.reset(4, n_ues, 2, 4, rng)
    history = [obs]
    for _ in range(ttis - 1):
        obs = game.step_followers(*follower.act(game.step_leader(leader.act(obs)))).leader_obs
        history.append(obs)
    return history


def _pad(obs, slots: list[int]):
    """The same cell seen with inactive UE slots inserted at ``slots`` (I_max grows)."""
    width = obs.active.shape[1]

    def widen(a):
        is_per_ue = isinstance(a, np.ndarray) and a.ndim >= 2 and a.shape[1] == width
        return np.insert(a, slots, 0, axis=1) if is_per_ue else a

    return dataclasses.replace(obs, **{f.name: widen(getattr(obs, f.name))
                                       for f in dataclasses.fields(obs)
                                       if f.name != "rbg_outcome"})


def test_mappo_zero_padding_gives_the_unpadded_outputs():
    agents = agents_for("mappo", max_ues=5)
    logits = []
    for slots in ([], [0, 2], [3, 3, 3]):  # unpadded, interleaved, trailing inactive slots
        feats: LeaderFeatures = agents.leader_features()
        feats.reset(4, 3 + len(slots))
        for obs in _leader_obs(3):
            obs = _pad(obs, slots) if slots else obs
            g, ue = feats.push(obs)
            rows, mask = gather_by_rank(ue, obs.active, 5)
            out = agents.leader_actor.logits(torch.from_numpy(g), torch.from_numpy(rows),
                                             torch.from_numpy(mask))
            feats.record(out.argmax(-1).numpy(), obs.active)
        logits.append(out)
    assert torch.equal(logits[0], logits[1]) and torch.equal(logits[0], logits[2])
    assert (logits[0][..., 4:] < -1e8).all()  # slots 4, 5 (no UE) are never scheduled


@pytest.mark.parametrize("n_ues", [1, 2, 4, 7])
def test_mappo_truncation_keeps_dcm_in_range_for_any_ue_count(n_ues):
    agents = agents_for("mappo")  # I_cap = 2
    leader = RecordingLeader(agents)
    run_episodes(cell(n_ues), leader, MARLFollower(agents), 4, n_envs=4, seed=1)
    for dcm, n_active in leader.sent:
        assert (dcm >= 0).all() and (dcm <= np.minimum(n_active, 2)[:, None]).all()


# ------------------------------------------------------------------------------- G-MAC
def test_gmac_plays_two_and_ten_ues_with_the_same_weights():
    agents = agents_for("gmac", scenario={"cell": {"ue_counts": [5], "n_rbgs": 4,
                                                   "episode_ttis": 10}})
    before = {k: v.clone() for k, v in agents.state_dict().items()}
    for n_ues in (2, 10):
        leader = RecordingLeader(agents)
        run_episodes(cell(n_ues, 4), leader, MARLFollower(agents), 4, n_envs=4, seed=2)
        sent = np.stack([d for d, _ in leader.sent])
        assert sent.max() <= n_ues and sent.min() >= 0
        if n_ues == 10:
            assert sent.max() > 5  # UEs beyond the training I are scheduled
    assert all(torch.equal(v, agents.state_dict()[k]) for k, v in before.items())


def test_gmac_dcm_depends_on_ue_order_through_the_gru():
    agents = agents_for("gmac")
    actor: GMACLeader = agents.leader_actor
    gen = torch.Generator().manual_seed(3)
    g = torch.randn(1, agents.leader_features().global_dim, generator=gen)
    x = torch.randn(1, 3, agents.leader_features().ue_dim, generator=gen)
    mask = torch.ones(1, 3, dtype=torch.bool)
    dcm = torch.tensor([[1, 3]])  # RBG 1 -> UE A (row 0), RBG 2 -> UE C (row 2)
    logp, _ = actor.evaluate(g, x, mask, dcm)
    # the same UEs in reverse order, the same assignment renamed: A is row 2, C is row 0
    logp_reversed, _ = actor.evaluate(g, x.flip(1), mask, torch.tensor([[3, 1]]))
    assert not torch.allclose(logp, logp_reversed)


# ------------------------------------------------------------------------------ config
@pytest.mark.parametrize("field, value", [
    ("algo", "qmix"), ("history_len", 0), ("ue_hidden", []), ("gamma", 1.5), ("max_ues", 0),
    ("n_envs", 2.5), ("leader_learning_rate", -1.0), ("scenario", "{not json"), ("save_every", -1),
    ("resume_from_checkpoint", 1.5), ("overwrite_output_dir", "maybe")])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"MARLConfig\.{field} = .* allowed: "):
        MARLConfig(**{field: value})


def test_invalid_scenario_names_its_section_field():
    with pytest.raises(ConfigError, match=r"CellConfig\.n_rbgs"):
        MARLConfig(scenario={"cell": {"n_rbgs": 0}})


# ------------------------------------------------------------------ checkpoints, loading
def assert_same_run(resumed: MARLTrainer, straight: MARLTrainer) -> None:
    """Four updates, the same weights bit for bit and the same utilities as the straight run."""
    assert resumed.update == 4
    for (name, a), b in zip(straight.agents.state_dict().items(),
                            resumed.agents.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert [r["leader_utility"] for r in resumed.history] == [
        r["leader_utility"] for r in straight.history]


def test_resume_after_interruption_is_bit_identical(tmp_path):
    straight = MARLTrainer(tiny_config(tmp_path / "a", total_updates=4, save_every=2))
    straight.train()
    interrupted = MARLTrainer(tiny_config(tmp_path / "b", total_updates=4, save_every=2))
    interrupted.train(stop_at=2)
    assert [p.name for p in interrupted.checkpoints()] == ["checkpoint-2"]
    resumed = MARLTrainer(tiny_config(tmp_path / "b", total_updates=4, save_every=2,
                                      resume_from_checkpoint=True))
    resumed.train()
    assert_same_run(resumed, straight)
    for role in ("leader", "follower"):
        sa = straight.optimizers[role].state_dict()["state"]
        sb = resumed.optimizers[role].state_dict()["state"]
        assert all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa)
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["update"] for line in lines] == [1, 2, 3, 4]


def test_checkpoint_state_is_readable_json_and_tensors_only(tmp_path):
    trainer = MARLTrainer(tiny_config(tmp_path, total_updates=2, save_every=1))
    trainer.train()
    checkpoint = tmp_path / "checkpoint-2"
    assert not (checkpoint / "trainer_state.pt").exists()
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["update"] == 2 and [r["update"] for r in state["history"]] == [1, 2]
    assert state["schedulers"]["leader"]["last_epoch"] == 2  # two cosine steps
    optimizers = torch.load(checkpoint / "optimizer.pt", weights_only=True)["optimizers"]
    for role in ("leader", "follower"):
        ours = trainer.optimizers[role].state_dict()["state"]
        assert all(torch.equal(ours[k]["exp_avg"], v["exp_avg"])
                   for k, v in optimizers[role]["state"].items())


def as_older_checkpoint(checkpoint) -> None:
    """Rewrite ``checkpoint`` as the MARL trainer saved it before trainer_state.json: one
    ``torch.save`` of {update, history, optimizers, schedulers} in ``trainer_state.pt``."""
    from trainers.runs.run_dir import load_trainer_state, write_manifest

    state = load_trainer_state(checkpoint)
    torch.save({k: state[k] for k in ("update", "history", "optimizers", "schedulers")},
               checkpoint / "trainer_state.pt")
    (checkpoint / "trainer_state.json").unlink()
    (checkpoint / "optimizer.pt").unlink()
    write_manifest(checkpoint, int(checkpoint.name.rsplit("-", 1)[1]))


def test_a_checkpoint_of_the_older_format_resumes_bit_identically(tmp_path):
    straight = MARLTrainer(tiny_config(tmp_path / "a", total_updates=4, save_every=2))
    straight.train()
    MARLTrainer(tiny_config(tmp_path / "b", total_updates=4, save_every=2)).train(stop_at=2)
    as_older_checkpoint(tmp_path / "b" / "checkpoint-2")
    resumed = MARLTrainer(tiny_config(tmp_path / "b", total_updates=4, save_every=2,
                                      resume_from_checkpoint=True))
    resumed.train()
    assert_same_run(resumed, straight)
    assert (tmp_path / "b" / "checkpoint-4" / "trainer_state.json").is_file()  # new format on


def test_saved_model_loads_as_textgame_policies(tmp_path):
    trainer = MARLTrainer(tiny_config(tmp_path, algo="gmac", total_updates=1))
    trainer.train()
    leader, follower = load_marl_policies(trainer.save_model(), greedy=False)
    loaded = run_episodes(cell(3), leader, follower, 8, n_envs=8, seed=5)
    direct = run_episodes(cell(3), MARLLeader(trainer.agents), MARLFollower(trainer.agents),
                          8, n_envs=8, seed=5)
    assert all(np.array_equal(loaded[k], direct[k], equal_nan=True) for k in direct)
    with pytest.raises(ValueError, match="n_rbgs = 3 is invalid"):
        run_episodes(cell(3, n_rbgs=3), leader, follower, 1, n_envs=1)


# ---------------------------------------------------------------------------- learning
def _mean(result: dict, kpi: str) -> float:
    return summarize([result])[kpi].mean


@pytest.mark.parametrize("algo", ["mappo", "gmac"])
def test_learns_clearly_above_random(tmp_path, algo):
    """Random UEs match their DCM bits half the time (S = 1/2 in expectation, follower utility
    ~0.33 here); UEs that learn to obey earn omega2 * S -> 0.5 from consistency alone, so a
    margin of 0.1 in follower utility is far outside the +-0.02 episode noise of 64 episodes;
    the leader's utility must rise above random/random's too."""
    # G-MAC's sequential BS learns more slowly: 50 updates put both ~0.05 above random's
    # leader utility on three evaluation seeds (30 updates left G-MAC only ~0.025 above).
    updates = {"mappo": 30, "gmac": 50}[algo]
    trainer = MARLTrainer(tiny_config(tmp_path, algo=algo, total_updates=updates, n_envs=32,
                                      minibatch_size=160, ppo_epochs=4, leader_learning_rate=5e-3,
                                      follower_learning_rate=5e-3, critic_learning_rate=5e-3))
    trainer.train()
    learned = run_episodes(TINY_CELL_SCENARIO, MARLLeader(trainer.agents),
                           MARLFollower(trainer.agents), 64, n_envs=64, seed=11)
    random = run_episodes(TINY_CELL_SCENARIO, RandomLeader(), RandomFollower(), 64, n_envs=64,
                          seed=11)
    assert _mean(learned, "follower_utility") > _mean(random, "follower_utility") + 0.1
    assert _mean(learned, "leader_utility") > _mean(random, "leader_utility") + 0.02
    assert _mean(learned, "throughput_mbps") > _mean(random, "throughput_mbps")


TINY_CELL_SCENARIO = ScenarioConfig.from_dict(TINY_CELL)


def test_train_marl_command_saves_every_episode_of_its_tables(tmp_path, capsys):
    """``agentic-mac train-marl``'s final tables: every episode in episodes.csv by (cell,
    policy, seed), each row's mean that of its episodes."""
    import csv

    from textgame.tables import cell
    from trainers.cli.train_marl import main

    assert main(["--algo", "mappo", "--ues", "2", "--ttis", "3", "--n_envs", "2",
                 "--total_updates", "1", "--eval_episodes", "3", "--eval_ues", "3",
                 "--disable_tqdm", "true", "--output_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    episodes = list(csv.DictReader((tmp_path / "episodes.csv").open()))
    groups = {(r["cell"], r["policy"], r["seed"]) for r in episodes}
    policies = {"MAPPO (sampled)", "MAPPO (greedy)", "random/random", "max_weight/dictator"}
    assert groups == {(c, p, "1") for c in ("training cell", "I = 3") for p in policies}
    assert len(episodes) == 3 * len(groups)
    title = out.index("KPIs on the I = 3")
    for policy in policies:
        values = [float(r["leader_utility"]) for r in episodes  # the tables' first KPI
                  if (r["cell"], r["policy"]) == ("I = 3", policy)]
        assert f"| {policy} | {cell(float(np.mean(values)))} |" in out[title:]
