"""The distilled real-time student (paper App. C-C): shapes and masking for any I, the bid
auction's maths, DAgger data, distillation from Max-Weight/Dictator, ONNX parity, the textgame
and PettingZoo policies, resume, LLM teachers (the scheduler's policies) and clean errors. Small
cells (N = 4, T <= 20)."""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from textgame.config import CellConfig, ConfigError, ScenarioConfig
from textgame.game import StackelbergGame
from textgame.parsing import format_dcm
from textgame.pettingzoo_env import env as aec_env
from textgame.policies import SAlohaConfig, SAlohaFollower, make_follower, make_leader
from textgame.runner import run_episodes
from trainers.policy.scheduler import LLMFollower, LLMLeader, load_llm_policies
from trainers.student.__main__ import main
from trainers.student.config import DistillConfig
from trainers.student.distill import Distiller, distill
from trainers.student.features import CellShape, StudentLeaderFeatures
from trainers.student.model import StudentModel
from trainers.student.onnx import OnnxBackend, export_onnx
from trainers.student.pettingzoo import StudentAECPolicy
from trainers.student.policies import (
    StudentFollower,
    StudentLeader,
    TorchBackend,
    load_student,
)
from trainers.student.ppo_baseline import (
    PPOBaseline,
    PPOBaselineConfig,
    plackett_luce_log_prob,
    train_from_scratch,
)
from trainers.student.realtime import RealtimeStudent
from trainers.student.rollout import collect
from trainers.student.teachers import HeuristicTeacher, LLMTeacher, build_teacher

pytestmark = pytest.mark.usefixtures("one_thread")

CELL = {"cell": {"ue_counts": [2, 3, 4], "episode_ttis": 20}}


def scenario(**cell) -> ScenarioConfig:
    return ScenarioConfig.from_dict({"cell": {**CELL["cell"], **cell}})


def student(seed: int = 0, hidden: int = 16, decoding: str = "greedy",
            follower_hidden: tuple[int, ...] = (16,)) -> StudentModel:
    torch.manual_seed(seed)
    return StudentModel(CellShape.of(CellConfig()), 2, hidden, follower_hidden, decoding=decoding)


def random_inputs(model: StudentModel, n_ues: int, rng: np.random.Generator, batch: int = 3):
    leader = model.leader
    global_x = rng.normal(size=(batch, leader.global_encoder.in_features)).astype(np.float32)
    ue_x = rng.normal(size=(batch, n_ues, leader.ue_encoder[0].in_features + 2))
    ue_x[..., 0] = rng.integers(0, 6, (batch, n_ues))  # queue (dPDUs)
    ue_x[..., 1] = rng.uniform(0.6, 1.6, (batch, n_ues))  # RBG capacity (dPDUs)
    mask = rng.random((batch, n_ues)) < 0.7
    follower_x = rng.normal(size=(batch, n_ues, model.follower.body[0].in_features))
    return global_x, ue_x.astype(np.float32), mask, follower_x.astype(np.float32)


def teacher() -> HeuristicTeacher:
    return HeuristicTeacher(make_leader("max_weight", CellConfig()), make_follower("dictator"))


# --------------------------------------------------------------------- shapes and masking
@pytest.mark.parametrize("n_ues", [1, 2, 5, 12])
def test_leader_names_only_active_ues_for_any_i(n_ues):
    model, rng = student(), np.random.default_rng(n_ues)
    g, x, mask, _ = random_inputs(model, n_ues, rng, batch=8)
    dcm, bids = model.leader(torch.from_numpy(g), torch.from_numpy(x), torch.from_numpy(mask))
    assert dcm.shape == (8, 4) and bids.shape == (8, 1 + n_ues, 4)
    owners = np.concatenate([np.ones((8, 1), bool), mask], 1)  # nobody is always allowed
    assert owners[np.arange(8)[:, None], dcm.numpy()].all()
    assert (bids[:, 1:][~torch.from_numpy(mask)] < -1e8).all()  # padded UEs never win


def test_bids_are_non_increasing_in_the_grant_index():
    model = student()
    g, x, mask, _ = random_inputs(model, 6, np.random.default_rng(1))
    _, bids = model.leader(torch.from_numpy(g), torch.from_numpy(x), torch.from_numpy(mask))
    assert (bids[..., 1:] <= bids[..., :-1]).all()


def test_topk_decision_equals_the_sequential_greedy_rule():
    model = student()
    for n_ues in range(1, 9):
        g, x, mask, _ = random_inputs(model, n_ues, np.random.default_rng(n_ues), batch=16)
        dcm, bids = model.leader(torch.from_numpy(g), torch.from_numpy(x),
                                 torch.from_numpy(mask))
        sequential, _ = model.leader.decode(bids, lambda n, logits: logits.argmax(-1))
        assert torch.equal(dcm, sequential)


def test_plackett_luce_probabilities_of_all_dcms_sum_to_one():
    torch.manual_seed(0)
    model = StudentModel(CellShape.of(CellConfig(n_rbgs=2)), 1, 8, [8])
    g, x, mask, _ = random_inputs(model, 2, np.random.default_rng(2), batch=1)
    mask[:] = True
    dcms = torch.tensor(list(itertools.product(range(3), repeat=2)))  # 9 DCMs over {0, 1, 2}
    args = [torch.from_numpy(a).expand(9, *a.shape[1:]) for a in (g, x, mask)]
    logits = model.leader.teacher_forced(*args, dcms)  # (9, N, 1 + I)
    logp = logits.log_softmax(-1).gather(-1, dcms[..., None]).squeeze(-1).sum(-1)
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-6)


def test_follower_shapes_and_inactive_ues_stay_silent():
    model = student()
    game = StackelbergGame(scenario(ue_counts=[3], max_ues=5), 4)
    follower = StudentFollower(model)
    follower.reset(4, 5, 4, 4, np.random.default_rng(0))
    game.reset(0)
    bitmap, ucm = follower.act(game.step_leader(np.zeros((4, 4), dtype=np.int64)))
    assert bitmap.shape == (4, 5, 4) and ucm.shape == (4, 5)
    assert not bitmap[:, 3:].any() and (ucm[:, 3:] == 0).all()
    assert ((0 <= ucm) & (ucm < 4)).all()


# ------------------------------------------------------------------------------- DAgger
def student_only_features(model, sc, episodes, seed):
    """The leader features a student-only rollout with ``collect``'s seeds visits."""
    (game_seed, policy_seed, _), = [s.spawn(3) for s in seed.spawn(1)]
    game, leader, follower = StackelbergGame(sc, episodes), StudentLeader(model), \
        StudentFollower(model)
    policy_rng = np.random.default_rng(policy_seed)  # one for all policies, as in collect
    leader.reset(episodes, sc.cell.max_ues, 4, policy_rng)
    follower.reset(episodes, sc.cell.max_ues, 4, 4, policy_rng)
    obs, rows = game.reset(game_seed), []
    while True:
        step = game.step_followers(*follower.act(game.step_leader(leader.act(obs))))
        rows.append(leader.last["global_x"])
        if step.done:
            return np.concatenate(rows)
        obs = step.leader_obs


@pytest.mark.parametrize("decoding", ["greedy", "sample"])
@pytest.mark.parametrize("beta, visits_own", [(0.0, True), (1.0, False)])
def test_dagger_data_are_the_students_own_visits(beta, visits_own, decoding):
    """With beta = 0 the rollout is the student's own play, sampled ones included (its
    generators seeded from the batch's policy seed)."""
    model, sc = student(decoding=decoding), scenario()
    seed = np.random.SeedSequence(7)
    leader, follower, _ = collect(model, teacher(), sc, 8, 8, seed, beta)
    own = student_only_features(model, sc, 8, np.random.SeedSequence(7))
    assert leader["global_x"].shape == (20 * 8, own.shape[1])
    assert np.array_equal(leader["global_x"].numpy(), own) == visits_own
    assert len(follower["ucm"]) == len(follower["follower_x"]) == len(follower["bitmap"])


def tiny_config(tmp_path, **changes) -> DistillConfig:
    values = dict(teacher="max_weight/dictator", scenario=CELL, ue_counts=[2, 3, 4],
                  history_len=1, leader_hidden=32, follower_hidden=[32], n_envs=16,
                  bc_episodes=96, dagger_rounds=4, dagger_episodes=48, epochs_per_round=4,
                  minibatch_size=128, learning_rate=5e-3, output_dir=str(tmp_path),
                  eval_ues=[2, 3, 4], eval_episodes=16)
    return DistillConfig(**{**values, **changes})


def test_dagger_rounds_append_to_the_aggregate(tmp_path):
    distiller = Distiller(tiny_config(tmp_path, bc_episodes=16, dagger_episodes=16,
                                      dagger_rounds=1, epochs_per_round=1))
    history = distiller.train()
    assert [r["leader_decisions"] for r in history] == [16 * 20, 32 * 20]
    assert [r["beta"] for r in history] == [1.0, 0.5]


def test_the_leader_loss_weights_rbgs_left_to_nobody_by_nobody_weight(tmp_path):
    distiller = Distiller(tiny_config(tmp_path, bc_episodes=16, dagger_rounds=0,
                                      epochs_per_round=1))
    distiller.train()
    d, rows = distiller.data, torch.arange(len(distiller.data["dcm"]))
    dcm = d["dcm"]  # (M, N)
    assert 0 < int((dcm == 0).sum()) < dcm.numel()  # both kinds of label: the weight matters
    with torch.no_grad():
        logits = distiller.student.leader.teacher_forced(d["global_x"], d["ue_x"], d["mask"], dcm)
        nll = -logits.log_softmax(-1).gather(-1, dcm[..., None]).squeeze(-1)  # (M, N)
        for weight in (1.0, 0.25):
            distiller.config.nobody_weight = weight
            w = torch.where(dcm == 0, weight, 1.0)
            expected = (w * nll).sum() / w.sum()
            assert distiller.leader_loss(rows).item() == pytest.approx(expected.item(), rel=1e-5)
    assert distiller.leader_loss(rows).item() != pytest.approx(nll.mean().item(), rel=1e-3)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """Max-Weight/Dictator distilled on I in {2, 3, 4}: (distiller, final directory)."""
    distiller = Distiller(tiny_config(tmp_path_factory.mktemp("student")))
    distiller.train()
    return distiller, distiller.save_model()


def test_student_agrees_with_max_weight_dictator_on_held_out_seeds(distilled):
    distiller, _ = distilled
    _, _, stats = collect(distiller.student, distiller.teacher, distiller.scenario, 32, 16,
                          np.random.SeedSequence(10**6), beta=0.0)
    assert stats["rbg_agreement"] >= 0.98
    assert stats["bitmap_agreement"] >= 0.98


# ------------------------------------------------------------- decoding: greedy or sampled
def play(leader, follower, seed: int = 1, policy_seed: int = 1, envs: int = 64
         ) -> dict[str, np.ndarray]:
    """One batch of I = 3 episodes: every DCM (T x B, N), the bits of every UE with a backlog
    (M, N) and the UCM of every active UE (U,)."""
    sc = scenario(ue_counts=[3])
    c, game, rng = sc.cell, StackelbergGame(sc, envs), np.random.default_rng(policy_seed)
    leader.reset(envs, c.max_ues, c.n_rbgs, rng)
    follower.reset(envs, c.max_ues, c.n_rbgs, c.ucm_levels, rng)
    obs, out = game.reset(seed), {"dcm": [], "bits": [], "ucm": []}
    while True:
        out["dcm"].append(leader.act(obs))
        follower_obs = game.step_leader(out["dcm"][-1])
        bitmap, ucm = follower.act(follower_obs)
        backlog = follower_obs.active & (follower_obs.buffer_dpdus > 0)  # (B, I_max)
        out["bits"].append(bitmap[backlog])
        out["ucm"].append(ucm[follower_obs.active])
        step = game.step_followers(bitmap, ucm)
        if step.done:
            return {k: np.concatenate(v) for k, v in out.items()}
        obs = step.leader_obs


def constant_follower(bit_prob: float, ucm_probs: list[float]) -> StudentModel:
    """A sampling student whose follower heads ignore their input: bitmap logit
    logit(bit_prob) on every RBG, UCM logits log(ucm_probs)."""
    model = student(decoding="sample")
    with torch.no_grad():
        for head in (model.follower.bitmap_head, model.follower.ucm_head):
            head.weight.zero_()
        model.follower.bitmap_head.bias.fill_(math.log(bit_prob / (1 - bit_prob)))
        model.follower.ucm_head.bias.copy_(torch.tensor(ucm_probs).log())
    return model


def test_sampled_bits_are_sent_at_their_probability_and_greedy_ones_never(tmp_path):
    """Bit logit logit(0.3): sampled, the n > 10 000 bits of backlogged UEs are independent
    Bernoulli(0.3) draws, within 4 sd = 4 sqrt(0.21 / n) <= 0.019 of 0.3 (a chance miss:
    6e-5); greedy (logit < 0), the mode, never sends."""
    directory = constant_follower(0.3, [0.25] * 4).save(tmp_path)
    bits = play(*load_student(directory))["bits"]
    assert bits.size > 10_000 and abs(bits.mean() - 0.3) <= 4 * math.sqrt(0.21 / bits.size)
    assert not play(*load_student(directory, decoding="greedy"))["bits"].any()


def test_sampled_ucms_follow_their_probabilities_and_greedy_ones_are_the_mode(tmp_path):
    """n = 64 envs x 3 UEs x 20 TTIs = 3840 draws: each level's frequency within 4 sd
    = 4 sqrt(p (1 - p) / n) of p."""
    probs = [0.4, 0.3, 0.2, 0.1]
    directory = constant_follower(0.3, probs).save(tmp_path)
    ucm = play(*load_student(directory))["ucm"]
    frequencies = np.bincount(ucm, minlength=4) / ucm.size
    assert ucm.size == 3840
    assert (np.abs(frequencies - probs) <= 4 * np.sqrt(np.multiply(probs, np.subtract(1, probs))
                                                       / ucm.size)).all()
    assert (play(*load_student(directory, decoding="greedy"))["ucm"] == 0).all()


def s_aloha_teacher(p: float) -> HeuristicTeacher:
    """Max-Weight over UEs that ignore it and, with a backlog, send on each RBG with
    probability p (S-ALOHA without backoff)."""
    return HeuristicTeacher(make_leader("max_weight", CellConfig()),
                            SAlohaFollower(SAlohaConfig(p0=p, backoff=1.0, floor=p)))


def test_a_sampling_student_sends_as_often_as_its_stochastic_teacher_and_greedy_never(tmp_path):
    """Distilled from UEs that send with p = 0.3 < 0.5. Tolerance 0.03: the measured rate's sd
    is sqrt(0.21 / n) <= 0.005 (n > 10 000 bits), BC estimates p from ~14 000 labels (sd
    ~0.004), the rest is the small budget's fit (seeds 0-3 land within 0.016 of 0.3)."""
    config = tiny_config(tmp_path, teacher="max_weight/s_aloha", student_decoding="sample",
                         bc_episodes=64, dagger_rounds=0, epochs_per_round=20,
                         export_onnx=False)
    distiller = Distiller(config, s_aloha_teacher(0.3))
    distiller.train()
    final = distiller.save_model()
    bits = play(*load_student(final))["bits"]  # the saved decoding: 'sample'
    assert bits.size > 10_000 and abs(bits.mean() - 0.3) <= 0.03
    assert not play(*load_student(final, decoding="greedy"))["bits"].any()  # mode collapse


def test_the_decoding_is_saved_with_the_student_and_used_when_loaded(tmp_path):
    directory = student(decoding="sample").save(tmp_path)
    meta = json.loads((directory / "student_config.json").read_text())
    assert meta["decoding"] == "sample" and StudentModel.load(directory).decoding == "sample"
    leader, follower = load_student(directory)
    assert leader.backend.decoding == follower.backend.decoding == "sample"
    assert load_student(directory, decoding="greedy")[1].backend.decoding == "greedy"
    del meta["decoding"]  # a student saved before decodings existed
    (directory / "student_config.json").write_text(json.dumps(meta))
    assert load_student(directory)[0].backend.decoding == "greedy"


def test_onnx_refuses_to_sample_with_one_named_error(tmp_path):
    directory = student(decoding="sample").save(tmp_path)
    with pytest.raises(ValueError, match=r"decoding = 'sample' is invalid with runtime 'onnx'; "
                                         r"allowed: 'greedy' \(sampling runs in PyTorch"):
        load_student(directory, "onnx")


def test_sampled_actions_are_reproducible_from_the_policy_seed():
    model = student(decoding="sample")
    pairs = [(StudentLeader(model), StudentFollower(model)) for _ in range(3)]
    first, again, other = (play(*pair, policy_seed=s, envs=8)
                           for pair, s in zip(pairs, (1, 1, 2), strict=True))
    for key in first:
        assert np.array_equal(first[key], again[key]), key
    assert not np.array_equal(first["dcm"], other["dcm"])
    greedy = [play(StudentLeader(model, TorchBackend(model, "greedy")),
                   StudentFollower(model, TorchBackend(model, "greedy")), policy_seed=s,
                   envs=8)["dcm"] for s in (1, 2)]
    assert np.array_equal(*greedy)  # the mode does not depend on the policy seed


@pytest.mark.parametrize("spec, teacher_greedy, decoding", [
    ("llm:runs/fig14-llm/final", True, "sample"), ("llm:org/repo", False, "sample"),
    ("max_weight/dictator", True, "greedy"), ("marl:runs/gmac/final", True, "greedy"),
    ("marl:runs/gmac/final", False, "sample")])
def test_auto_decoding_samples_exactly_when_the_teacher_does(spec, teacher_greedy, decoding):
    config = DistillConfig(teacher=spec, teacher_greedy=teacher_greedy)
    assert config.student_decoding == "auto" and config.decoding == decoding
    for chosen in ("greedy", "sample"):
        assert DistillConfig(teacher=spec, student_decoding=chosen).decoding == chosen


# ------------------------------------------------------------- undistilled PPO baseline
def test_plackett_luce_samples_follow_their_log_probs():
    torch.manual_seed(0)
    model = StudentModel(CellShape.of(CellConfig(n_rbgs=2)), 1, 8, [8])
    g, x, mask, _ = random_inputs(model, 2, np.random.default_rng(4), batch=1)
    mask[:] = True
    args = [torch.from_numpy(a).expand(40000, *a.shape[1:]) for a in (g, x, mask)]
    dcm, logits = model.leader.sample(*args, torch.Generator().manual_seed(0))  # (M, 2)
    p = plackett_luce_log_prob(logits, dcm).exp()
    codes, counts = torch.unique(dcm[:, 0] * 3 + dcm[:, 1], return_counts=True)
    for code, count in zip(codes, counts, strict=True):
        expected = p[dcm[:, 0] * 3 + dcm[:, 1] == code][0].item()
        assert count.item() / 40000 == pytest.approx(expected, abs=0.01)  # ~4 sigma


def ppo_config(**changes) -> PPOBaselineConfig:
    values = dict(n_envs=8, history_len=1, leader_hidden=16, follower_hidden=[16],
                  critic_hidden=[32], minibatch_size=64, ppo_epochs=1)
    return PPOBaselineConfig(**{**values, **changes})


def test_ppo_baseline_first_ratio_is_exactly_one():
    baseline = PPOBaseline(ppo_config(), scenario())
    leader, follower, _ = baseline.collect(np.random.SeedSequence(0))
    order = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for batch, evaluate in ((leader, baseline.evaluate_leader),
                                (follower, baseline.evaluate_follower)):
            idx = torch.randperm(len(batch["logp"]), generator=order)[:64]
            logp, entropy, values = evaluate({k: v[idx] for k, v in batch.items()})
            assert torch.equal(logp, batch["logp"][idx])  # ratio exp(0) = 1 before any step
            assert torch.equal(values, batch["values"][idx])
            assert (entropy > 0).all()


def test_ppo_baseline_trains_and_saves_a_loadable_student(tmp_path):
    result = train_from_scratch(ppo_config(), scenario(), 600.0, tmp_path, max_updates=2)
    assert result["updates"] == 2 and len(result["history"]) == 2
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["update"] for line in lines] == [1, 2]
    trained, fresh = StudentModel.load(result["final"]), PPOBaseline(ppo_config(),
                                                                     scenario()).student
    assert not torch.equal(trained.leader.bid_head.weight, fresh.leader.bid_head.weight)
    kpis = run_episodes(scenario(ue_counts=[6]), *load_student(result["final"]), episodes=2,
                        n_envs=2, seed=0)
    assert np.isfinite(kpis["leader_utility"]).all()


def test_distill_with_a_ppo_baseline_adds_its_columns(tmp_path):
    config = tiny_config(tmp_path, bc_episodes=16, dagger_rounds=0, epochs_per_round=1,
                         baseline="ppo", baseline_seconds=0.01, eval_ues=[3], eval_episodes=4,
                         export_onnx=False)
    result = distill(config)
    assert result["baseline"]["updates"] == 1  # at least one update, however short the time
    (row,) = result["retention"]
    for kpi in ("leader_utility", "throughput_mbps"):
        assert row[f"baseline_{kpi}_retention"] == pytest.approx(
            row[f"baseline_{kpi}"] / row[f"teacher_{kpi}"])
    table = (tmp_path / "retention.md").read_text().splitlines()
    assert "student / baseline / teacher" in table[0] and table[2].count(" / ") == 4
    episodes = list(csv.DictReader((tmp_path / "episodes.csv").open()))  # behind the table
    assert [(r["ues"], r["player"], r["seed"]) for r in episodes[::4]] == [
        ("3", player, str(config.seed + 1)) for player in ("teacher", "student", "baseline")]
    for player in ("teacher", "student", "baseline"):
        values = [float(r["throughput_mbps"]) for r in episodes if r["player"] == player]
        assert row[f"{player}_throughput_mbps"] == pytest.approx(np.mean(values), rel=1e-12)


# --------------------------------------------------------------------------- ONNX, serving
def test_onnx_and_pytorch_agree_for_i_1_to_12(tmp_path):
    model = student(hidden=32)
    backend = OnnxBackend(export_onnx(model, tmp_path)[0].parent)
    rng = np.random.default_rng(3)
    for n_ues in range(1, 13):
        g, x, mask, fx = random_inputs(model, n_ues, rng)
        dcm, bids = backend.leader_outputs(g, x, mask)
        outputs = backend.follower_outputs(fx)
        with torch.no_grad():
            torch_dcm, torch_bids = model.leader(*map(torch.from_numpy, (g, x, mask)))
            torch_outputs = model.follower(torch.from_numpy(fx))
        assert np.array_equal(dcm, torch_dcm.numpy())
        assert np.abs(bids - torch_bids.numpy()).max() <= 1e-5
        for ours, theirs in zip(outputs, torch_outputs, strict=True):
            assert ours.shape == tuple(theirs.shape)
            assert np.abs(ours.astype(np.float64) - theirs.numpy()).max() <= 1e-5


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_realtime_path_decides_exactly_as_the_batched_policies(runtime, distilled, tmp_path):
    """The lean B = 1 path against StudentLeader/StudentFollower on a churning cell (UEs join
    and leave: fresh histories, I_t from 1 to I_max), both fed the same observations."""
    _, final = distilled
    sc = scenario(ue_counts=[4], max_ues=7, join_prob=0.2, leave_prob=0.2)
    c = sc.cell
    leader, follower = load_student(final, runtime)
    lean = RealtimeStudent.load(final, c.max_ues, runtime)
    game, seen = StackelbergGame(sc, 1), set()
    for seed in range(3):
        leader.reset(1, c.max_ues, c.n_rbgs, None)
        follower.reset(1, c.max_ues, c.n_rbgs, c.ucm_levels, None)
        lean.reset()
        obs = game.reset(seed)
        while True:
            dcm = leader.act(obs)
            assert np.array_equal(lean.leader(obs), dcm[0])
            follower_obs = game.step_leader(dcm)
            bitmap, ucm = follower.act(follower_obs)
            lean_bitmap, lean_ucm = lean.followers(follower_obs)
            assert np.array_equal(lean_bitmap, bitmap[0]) and np.array_equal(lean_ucm, ucm[0])
            for key, value in zip(("global_x", "ue_x", "mask"), lean.last, strict=True):
                assert np.array_equal(leader.last[key], value)  # features bit for bit
            assert np.array_equal(follower.last["ue_x"], lean.ue_stack.reshape(1, c.max_ues, -1))
            seen.add(int(obs.n_active[0]))
            step = game.step_followers(bitmap, ucm)
            if step.done:
                break
            obs = step.leader_obs
    assert len(seen) >= 4  # the churn really varied I_t


def test_realtime_path_with_no_active_ue_matches_the_batched_features():
    """A TTI with nobody in the cell: one padded row of zeros and an all-false mask, as the
    batched features give (W = max(I_t, 1)); the history still shifts."""
    model = student(hidden=16)
    sc = scenario(ue_counts=[3])
    game, lean = StackelbergGame(sc, 1), RealtimeStudent(model, TorchBackend(model), 3)
    batched = StudentLeaderFeatures(model.shape, model.history_len)
    batched.reset(1, 3)
    obs = game.reset(0)
    for active in (obs.active, np.zeros_like(obs.active)):
        obs.active, obs.n_active = active, active.sum(1)
        ours, theirs = lean.leader_inputs(obs), batched.push(obs)
        for mine, reference in zip(ours, theirs, strict=True):
            assert mine.shape == reference.shape and np.array_equal(mine, reference)
        batched.record(np.zeros((1, model.shape.n_rbgs), dtype=np.int64), active)
    assert ours[1].shape == (1, 1, ours[1].shape[-1]) and not ours[2].any()


def test_onnx_runtime_plays_the_same_episodes_as_pytorch(distilled):
    _, final = distilled
    sc = scenario(ue_counts=[7])  # outside the distillation D(I)
    torch_kpis = run_episodes(sc, *load_student(final), episodes=4, n_envs=4, seed=5)
    onnx_kpis = run_episodes(sc, *load_student(final, "onnx"), episodes=4, n_envs=4, seed=5)
    for kpi, values in torch_kpis.items():
        assert np.array_equal(values, onnx_kpis[kpi], equal_nan=True), kpi


def test_pettingzoo_policy_replays_the_vectorised_game(distilled):
    _, final = distilled
    sc = scenario(ue_counts=[3])
    env, policy = aec_env(scenario=sc), StudentAECPolicy.load(final)
    env.reset(seed=11)
    dcms = []
    for agent in env.agent_iter():
        obs, _, terminated, truncated, _ = env.last()
        action = None if terminated or truncated else policy(agent, obs)
        if agent == "bs" and action is not None:
            dcms.append(action)
        env.step(action)
    game, (leader, follower) = StackelbergGame(sc, 1), load_student(final)
    leader.reset(1, 3, 4, None)
    follower.reset(1, 3, 4, 4, None)
    obs, expected = game.reset(11), []
    for _ in range(20):
        expected.append(leader.act(obs)[0])
        step = game.step_followers(*follower.act(game.step_leader(expected[-1][None])))
        obs = step.leader_obs
    assert np.array_equal(np.stack(dcms), np.stack(expected))


# ---------------------------------------------------------------------- resume and errors
def test_resume_continues_exactly(tmp_path):
    changes = dict(bc_episodes=16, dagger_episodes=16, dagger_rounds=2, epochs_per_round=1)
    whole = Distiller(tiny_config(tmp_path / "whole", **changes))
    whole.train()
    Distiller(tiny_config(tmp_path / "cut", **changes)).train(stop_at=1)
    resumed = Distiller(tiny_config(tmp_path / "cut", resume_from_checkpoint=True, **changes))
    resumed.train()
    for a, b in zip(whole.student.state_dict().values(), resumed.student.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [0, 1, 2]


@pytest.mark.parametrize("spec, message", [
    ("boss/dictator", "DistillConfig.teacher = 'boss/dictator' is invalid; allowed: "
                      "'LEADER/FOLLOWER' with LEADER in"),
    ("marl:/no/such/dir", "DistillConfig.teacher = 'marl:/no/such/dir' is invalid; allowed: "
                          "'marl:DIR' with DIR a MARL model directory"),
])
def test_bad_teacher_specs_exit_with_one_named_error(spec, message, capsys, tmp_path):
    assert main(["--teacher", spec, "--output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_config_errors_name_field_value_and_allowed():
    with pytest.raises(ConfigError, match=r"DistillConfig.dagger_beta = 1.5 is invalid; "
                                          r"allowed: a number in \[0.0, 1.0\]"):
        DistillConfig(teacher="max_weight/dictator", dagger_beta=1.5)
    with pytest.raises(ConfigError, match=r"DistillConfig.nobody_weight = 0 is invalid; "
                                          r"allowed: a finite number > 0"):
        DistillConfig(teacher="max_weight/dictator", nobody_weight=0)
    with pytest.raises(ConfigError, match=r"DistillConfig.teacher = None is invalid"):
        DistillConfig()
    with pytest.raises(ConfigError, match=r"DistillConfig.student_decoding = 'mode' is invalid; "
                                          r"allowed: one of \['auto', 'greedy', 'sample'\]"):
        DistillConfig(teacher="max_weight/dictator", student_decoding="mode")
    with pytest.raises(ConfigError, match=r"DistillConfig.eval_runtime = 'onnx' is invalid; "
                                          r"allowed: 'torch' when the student samples"):
        DistillConfig(teacher="llm:runs/x/final", eval_runtime="onnx")



def test_a_student_refuses_a_cell_with_other_n():
    with pytest.raises(ValueError, match=r"n_rbgs = 5 is invalid for this student; allowed: 4"):
        StudentLeader(student()).reset(1, 3, 5, None)


def test_heuristic_teachers_have_no_d_of_i_of_their_own():
    assert build_teacher("round_robin/dictator", CellConfig()).ue_counts is None


def test_evaluate_plays_a_student_spec(distilled):
    from trainers.evaluation.suites import Evaluator, suite_cases
    from trainers.specs import parse_spec

    _, final = distilled
    spec = parse_spec(f"Student=student:{final}")
    case = suite_cases("ues", scenario().to_dict())[3]  # I = 5
    kpis = Evaluator(episodes=4, n_envs=4).run(spec, case)
    expected = run_episodes(case.scenario, *load_student(final), episodes=4, n_envs=4, seed=0)
    assert (spec.kind, spec.label) == ("student", "Student")
    assert np.array_equal(kpis["leader_utility"], expected["leader_utility"])


# --------------------------------------------------------------------------- LLM teachers
LLM_CELL = {"cell": {"ue_counts": [2, 3], "episode_ttis": 4}}  # N = K = 4, as student()


@pytest.fixture(scope="module")
def llm_teacher_dir(save_llm, tmp_path_factory) -> str:
    """Untrained tiny adapters of a run with k = 1 history and final temperature 0.5."""
    return save_llm(tmp_path_factory.mktemp("llm-teacher") / "policy", history_ttis=1,
                    temperature_end=0.5, scenario=LLM_CELL)


def test_an_llm_teacher_is_the_scheduler_at_the_runs_temperature(llm_teacher_dir):
    cell = ScenarioConfig.from_dict(LLM_CELL).cell
    greedy = build_teacher(f"llm:{llm_teacher_dir}", cell)
    assert isinstance(greedy.leader, LLMLeader) and isinstance(greedy.follower, LLMFollower)
    assert greedy.ue_counts == (2, 3)
    assert greedy.leader.temperature == greedy.follower.temperature == 0.5  # temperature_end
    sampling = build_teacher(f"llm:{llm_teacher_dir}", cell, greedy=False)
    assert sampling.leader.temperature == sampling.follower.temperature == 1.0


def bench_student():
    """benchmarks/bench_student.py as a module (benchmarks/ is no package)."""
    path = Path(__file__).parents[1] / "benchmarks" / "bench_student.py"
    spec = importlib.util.spec_from_file_location("bench_student", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("llm", ["saved adapters", "tiny"])
def test_bench_student_times_an_llm_policy_beside_the_student(llm, llm_teacher_dir, tmp_path,
                                                              capsys):
    spec = llm_teacher_dir if llm == "saved adapters" else "tiny"
    table = bench_student().main(["--ues", "2", "3", "--ttis", "3", "--episodes", "1",
                                  "--llm_ttis", "2", "--llm", spec,
                                  "--cache_dir", str(tmp_path)])
    rows = [line.split("|")[1:-1] for line in table.splitlines()[2:]]
    assert [int(row[0]) for row in rows] == [2, 3]
    for row in rows:
        assert " / " in row[7]  # the compiled path's median / p99
        features, network, _ = (float(x) for x in row[8].split(" / "))  # glue may round to 0
        assert features > 0 and network > 0
        assert all(float(x) > 0 for x in row[9].split(" / "))  # decide(): the one-call path
        llm_ms, ratio = float(row[10]), row[11].strip()
        assert llm_ms > 0 and ratio.endswith("x") and float(ratio[:-1]) > 0
    assert f"LLM: {spec};" in capsys.readouterr().out


def bench_teacher():
    """benchmarks/bench_teacher.py as a module."""
    path = Path(__file__).parents[1] / "benchmarks" / "bench_teacher.py"
    spec = importlib.util.spec_from_file_location("bench_teacher", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv, message", [
    (["--envs", "0"], "--envs = 0 is invalid; allowed: integers >= 1"),
    (["--teacher", "llm:/nonexistent"],
     "--teacher = 'llm:/nonexistent' is invalid; allowed: 'tiny' or llm:DIR_OR_REPO")])
def test_bench_teacher_refuses_bad_arguments_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_teacher().main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err.splitlines()[-1]


def test_bench_teacher_labels_one_cell_at_a_time_and_batched(llm_teacher_dir, tmp_path, capsys):
    table = bench_teacher().main(["--teacher", f"llm:{llm_teacher_dir}", "--envs", "1", "3",
                                  "--ues", "2", "--ttis", "2", "--cache_dir", str(tmp_path)])
    rows = [line.split("|")[1:-1] for line in table.splitlines()[2:]]
    assert [int(row[0]) for row in rows] == [1, 3]
    assert rows[0][3].strip() == "1.0x"
    for _, decisions, ttis, ratio in rows:
        assert float(decisions) > float(ttis) > 0 and float(ratio.strip()[:-1]) > 0
    assert f"teacher: llm:{llm_teacher_dir}; I = 2" in capsys.readouterr().out


@pytest.mark.parametrize("option, allowed", [
    ("--llm", "allowed: 'tiny' or saved Stackelberg PPO adapters"),
    ("--student", "allowed: a student directory written by agentic-mac distill")])
def test_bench_student_refuses_a_directory_that_is_none(option, allowed, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_student().main(["--ues", "2", option, str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert f"{option} = '{tmp_path / 'missing'}' is invalid; {allowed}" in (
        capsys.readouterr().err.splitlines()[-1])


def test_an_llm_teacher_acts_as_the_scheduler_for_the_same_seed(llm_teacher_dir):
    sc = ScenarioConfig.from_dict(LLM_CELL)
    pairs = [build_teacher(f"llm:{llm_teacher_dir}", sc.cell), LLMTeacher(
        *load_llm_policies(llm_teacher_dir, ucm_levels=sc.cell.ucm_levels))]
    for pair in pairs:
        pair.leader.reset(2, sc.cell.max_ues, 4, np.random.default_rng(5))
        pair.follower.reset(2, sc.cell.max_ues, 4, 4, np.random.default_rng(6))
    game = StackelbergGame(sc, 2)
    obs = game.reset(3)
    while True:
        dcms = [pair.leader.act(obs) for pair in pairs]
        assert np.array_equal(*dcms)
        follower_obs = game.step_leader(dcms[0])
        actions = [pair.follower.act(follower_obs) for pair in pairs]
        assert all(np.array_equal(a, b) for a, b in zip(*actions, strict=True))
        step = game.step_followers(*actions[0])
        if step.done:
            break
        obs = step.leader_obs
    assert all(len(pairs[0].leader.history.leader(b)) == 1 for b in range(2))  # k = 1


def test_an_llm_teacher_of_a_dictator_run_has_obedient_ues(save_llm, tmp_path):
    folder = save_llm(tmp_path / "dictator", follower_policy="dictator", scenario=LLM_CELL)
    t = build_teacher(f"llm:{folder}", ScenarioConfig.from_dict(LLM_CELL).cell)
    assert type(t.follower).__name__ == "DictatorFollower"


def test_dagger_labels_states_with_an_llm_teacher_told_the_executed_dcm(llm_teacher_dir):
    sc = ScenarioConfig.from_dict(LLM_CELL)
    t = build_teacher(f"llm:{llm_teacher_dir}", sc.cell)
    told = []
    executed = t.leader.executed
    t.leader.executed = lambda dcm, active: (told.append(dcm.copy()), executed(dcm, active))
    leader, follower, stats = collect(student(), t, sc, 2, 2, np.random.SeedSequence(0), 0.5)
    assert leader["dcm"].shape == (4 * 2, 4) and len(told) == 4
    for b in range(2):  # the last prompt's history line holds the DCM executed at TTI 2
        assert t.leader.history.leader(b)[-1].startswith(f"TTI 2: DCM {format_dcm(told[2][b])} ")
    assert t.leader.invalid == 0 and t.follower.invalid == 0


def test_a_bad_llm_teacher_spec_exits_with_one_named_error(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    spec = f"llm:{tmp_path / 'empty'}"
    assert main(["--teacher", spec, "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (f"DistillConfig.teacher = {spec!r} is invalid; allowed: 'llm:DIR_OR_REPO' naming "
            "Stackelberg PPO adapters (policy directory") in err
