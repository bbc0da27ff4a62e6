"""How well a seeded policy imitates its experts (paper §IV): greedy PAG play on held-out seeds.

The LLM plays both roles with greedy decoding under the PAG (eqs. 12-14) at each I of the
training distribution D(I). At every TTI the expert leader acts on the leader observation the
LLM saw: Max-Weight is a function of what the leader prompt shows (each UE's bsr and csi, in
rank order, ties to the lowest rank), Round Robin of the TTI count and I_t, so a perfect
imitator agrees everywhere. Two figures:

- leader agreement: the fraction of RBGs on which the LLM's DCM names the expert's UE (or 0);
- follower obedience: the fraction of follower decisions whose bitmap equals the UE's DCM bits
  (the obedient expert's bitmap; the UCM is not compared).

Both are measured on the LLM's own trajectory, so an early mistake shows up in the states that
follow, as in PPO; the episodes' KPIs come along.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from textgame.config import ScenarioConfig
from textgame.metrics import summarize
from textgame.parsing import read_dcm, read_follower
from textgame.policies import make_leader
from textgame.text_env import TextStackelbergEnv
from trainers.policy.chat import chat_render
from trainers.policy.decide import Decider
from trainers.stackelberg.config import StackelbergPPOConfig

AGREEMENT_SEED = 10**6  # held out: expert_dataset uses the training seeds 0..


@dataclasses.dataclass
class _Tally:
    rbgs: int = 0
    rbgs_agreed: int = 0
    follower_decisions: int = 0
    follower_obeyed: int = 0


def _greedy_texts(decider: Decider, env: TextStackelbergEnv, role: str, prompts: list[str],
                  n_ues) -> list[str]:
    """The LLM's greedy actions, decided as in the rollout (meta-prompt KV states reused)."""
    generator = torch.Generator(decider.policy.device)  # unused by greedy decoding
    return decider.decide(role, prompts, [int(n) for n in n_ues], env.builder,
                          generator=generator, greedy=True).sample.texts


def _play(policy, tokenizer, config: StackelbergPPOConfig, scenario: ScenarioConfig,
          episodes: int, seed: int, tally: _Tally) -> list[dict]:
    """Greedy LLM play of ``episodes`` episodes; updates ``tally``; returns the episode KPIs."""
    cell = scenario.cell
    render = chat_render(tokenizer) if config.use_chat_template else None
    decider = Decider(policy, tokenizer, pag_backend=config.pag_backend)
    expert = make_leader(config.expert_leader, cell)

    kpis, remaining = [], episodes
    for batch_seed in np.random.SeedSequence(seed).spawn(math.ceil(episodes / config.n_envs)):
        b = min(config.n_envs, remaining)
        env = TextStackelbergEnv(scenario, b, config.text_config(), render)
        expert.reset(b, env.max_ues, env.n_rbgs, np.random.default_rng(batch_seed))
        prompts = env.reset(batch_seed)
        while prompts is not None:
            obs = env.game.leader_obs()
            target = expert.act(obs)  # (B, N)
            texts = _greedy_texts(decider, env, "leader", prompts, obs.n_active)
            dcm = np.stack([read_dcm(text, cell.n_rbgs, int(n))[0]
                            for text, n in zip(texts, obs.n_active, strict=True)])  # (B, N)
            tally.rbgs += dcm.size
            tally.rbgs_agreed += int((dcm == target).sum())
            prompts = env.step_leader(texts)
            slots, bits = env.follower_slots, env.follower_obs.dcm_bits  # bits (B, I_max, N)
            texts = _greedy_texts(decider, env, "follower", prompts,
                                  [obs.n_active[e] for e, _ in slots])
            tally.follower_decisions += len(texts)
            tally.follower_obeyed += sum(
                np.array_equal(read_follower(text, cell.n_rbgs, cell.ucm_levels)[0], bits[e, i])
                for text, (e, i) in zip(texts, slots, strict=True))
            step = env.step_followers(texts)
            prompts = step.leader_prompts
        kpis.append(step.info["kpis"])
        remaining -= b
    return kpis


@torch.no_grad()
def expert_agreement(policy, tokenizer, config: StackelbergPPOConfig, *, episodes: int = 4,
                     episode_ttis: int | None = None, ue_counts: tuple[int, ...] | None = None,
                     seed: int = AGREEMENT_SEED) -> dict[str, float]:
    """Leader agreement and follower obedience of ``policy`` (a ``StackelbergPolicy``).

    ``episodes`` episodes of ``episode_ttis`` TTIs (default: the scenario's) at each I of
    ``ue_counts`` (default: the scenario's), in batches of ``config.n_envs``, on seeds from
    ``seed`` (held out from the seeding data). Returns ``leader_agreement`` and
    ``follower_obedience`` over all of them, the same per I (``leader_agreement/I=3``, ...) and
    the mean throughput, fairness and collision rate per I.
    """
    base = config.scenario_config()
    out: dict[str, float] = {}
    total = _Tally()
    for n_ues in ue_counts or base.cell.ue_counts:
        padded = base.cell.max_ues != max(base.cell.ue_counts)  # a churn cell's join slots
        scenario = base.with_ue_counts((n_ues,), max_ues=base.cell.max_ues if padded else None,
                                       episode_ttis=episode_ttis or base.cell.episode_ttis)
        tally = _Tally()
        summary = summarize(_play(policy, tokenizer, config, scenario, episodes, seed + n_ues,
                                  tally))
        out[f"leader_agreement/I={n_ues}"] = tally.rbgs_agreed / tally.rbgs
        out[f"follower_obedience/I={n_ues}"] = tally.follower_obeyed / tally.follower_decisions
        for kpi in ("throughput_mbps", "fairness", "collision_rate"):
            out[f"{kpi}/I={n_ues}"] = summary[kpi].mean
        for name in dataclasses.fields(_Tally):
            setattr(total, name.name, getattr(total, name.name) + getattr(tally, name.name))
    out["leader_agreement"] = total.rbgs_agreed / total.rbgs
    out["follower_obedience"] = total.follower_obeyed / total.follower_decisions
    return out


def format_agreement(metrics: dict[str, float]) -> str:
    """The figures of :func:`expert_agreement` as a Markdown table, one row per I."""
    counts = sorted(int(k.split("=")[1]) for k in metrics if k.startswith("leader_agreement/"))
    lines = ["expert agreement (greedy PAG play, held-out seeds)",
             "| I | leader agreement per RBG | follower obedience | throughput Mbps | fairness "
             "| collision rate |", "|---:|---:|---:|---:|---:|---:|"]
    for n in counts:
        lines.append(f"| {n} | " + " | ".join(f"{metrics[f'{k}/I={n}']:.3f}" for k in (
            "leader_agreement", "follower_obedience", "throughput_mbps", "fairness",
            "collision_rate")) + " |")
    lines.append(f"| all | {metrics['leader_agreement']:.3f} | "
                 f"{metrics['follower_obedience']:.3f} | | | |")
    return "\n".join(lines)
