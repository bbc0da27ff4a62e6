"""Evaluation of any policy on the paper's fixed scenarios (paper §V, App. C; design §3, §8).

A *suite* is a list of :class:`Case` (one scenario each, built from a base scenario):

- ``ues``: I = 2..10 at N = 4 (Figs. 5 and 9);      - ``rbgs``: N = 3..8 at I = 5 (Fig. 8);
- ``tbler``: residual TBLER 0..0.5 at I = 5;         - ``traffic``: the seven cases of Table III;
- ``legacy``: agentic + legacy (S-ALOHA) UE mixes at three loads (Table VII);
- ``stress``: the static stress test of Table VIII (full buffers, fixed heterogeneous channels).

A *policy spec* names what plays (:mod:`trainers.specs`, optionally as ``label=spec``): a
heuristic pair ``max_weight/dictator``, ``marl:DIR`` (``{ues}`` and ``{rbgs}`` in DIR filled per
case: MAPPO-S), ``student:DIR`` or ``llm:DIR_OR_REPO``. LLM adapters play through the batched
rollout of training (their UEs as trained: the LLM, or the Dictator ablation's obedient UEs),
every other kind through :func:`trainers.specs.build_policy`.

Every policy meets the same environment seeds in a case (common random numbers), so differences
between policies are not sampling noise of the scenarios.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from textgame.config import ScenarioConfig, check_int_at_least
from textgame.policies import MixedFollower, make_follower
from textgame.runner import batch_seeds, run_episodes
from trainers.specs import PolicySpec, build_policy

SUITES = ("ues", "ues14", "rbgs", "tbler", "traffic", "legacy", "stress")
UE_SWEEPS = {"ues": 10, "ues14": 14}  # the sweeps over I = 2..this at N = 4
TBLERS = (0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5)
# Table III: B Bernoulli, P periodic, O bursty on-off; models go to UE slots in this order.
TRAFFIC_CASES = {"Case 1 (5B)": "BBBBB", "Case 2 (3B/2P)": "BBBPP", "Case 3 (2B/3P)": "BBPPP",
                 "Case 4 (3B/2O)": "BBBOO", "Case 5 (2B/3O)": "BBOOO",
                 "Case 6 (3B/1P/1O)": "BBBPO", "Case 7 (1B/2P/2O)": "BPPOO"}
_MODELS = {"B": "bernoulli", "P": "periodic", "O": "bursty"}
LEGACY_LOADS = (0.2, 0.5, 0.8)  # Table VII's three loads (values lost; assumed: design §2's)
LEGACY_MIXES = (0, 1, 2, 4, 5)  # legacy UEs among 5: 5 agentic, 4+1, 3+2, 1+4, 5 legacy


@dataclass(frozen=True)
class Case:
    """One scenario of a suite; ``x`` is its value on the suite's axis (figures)."""

    suite: str
    label: str
    x: float | str
    scenario: ScenarioConfig
    legacy_ues: int = 0


def _merge(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for section, values in changes.items():
        out.setdefault(section, {}).update(values)
    return out


def suite_cases(suite: str, base: dict | ScenarioConfig | None = None) -> list[Case]:
    """The cases of ``suite`` on top of ``base`` (a scenario or its mapping; None = design §2)."""
    if suite not in SUITES:
        raise ValueError(f"suite {suite!r} is unknown; allowed: {list(SUITES)}")
    if not isinstance(base, ScenarioConfig):
        base = ScenarioConfig.from_dict(base)  # validates and fills every field

    def case(label, x, n_ues, cell=None, changes=None, legacy=0) -> Case:
        """The case of I = ``n_ues`` with ``cell`` fields and other sections' ``changes``."""
        scenario = base.with_ue_counts((n_ues,), **(cell or {}))
        if changes:
            scenario = ScenarioConfig.from_dict(_merge(scenario.to_dict(), changes))
        return Case(suite, label, x, scenario, legacy)

    if suite in UE_SWEEPS:  # ues14: I past the paper's 10, for held-out cell sizes
        return [case(f"I={i}", i, i, {"n_rbgs": 4}) for i in range(2, UE_SWEEPS[suite] + 1)]
    if suite == "rbgs":
        return [case(f"N={n}", n, 5, {"n_rbgs": n}) for n in range(3, 9)]
    if suite == "tbler":
        return [case(f"TBLER={p:g}", p, 5, {"tbler": p}) for p in TBLERS]
    if suite == "traffic":
        return [case(name, name, 5, changes={"traffic": {"models": [_MODELS[c] for c in code]}})
                for name, code in TRAFFIC_CASES.items()]
    if suite == "legacy":
        return [case(f"{5 - k} agentic + {k} legacy, lambda={lam:g}", f"{5 - k}A+{k}L", 5,
                     changes={"traffic": {"bernoulli_rates": [lam]}}, legacy=k)
                for lam in LEGACY_LOADS for k in LEGACY_MIXES]
    # Table VIII: five UEs that always have data, on fixed channels poor..good that never move.
    return [case("stress", "stress", 5, changes={
        "traffic": {"models": ["bernoulli"], "bernoulli_rates": [1.0], "initial_dpdus": 100},
        "channel": {"initial": "fixed", "fixed_states": [2, 1, 0, 2, 0], "stay_prob": 1.0}})]


# -------------------------------------------------------------------------------- evaluator
@dataclass
class Evaluator:
    """Runs policy specs on cases: ``episodes`` per (policy, case), in batches of ``n_envs``."""

    episodes: int = 64
    n_envs: int = 16
    seed: int = 0
    device: str | None = None
    base_model: str | None = None  # override of an LLM policy's base model (name or path)

    def __post_init__(self) -> None:
        for name in ("episodes", "n_envs"):
            check_int_at_least("Evaluator", name, getattr(self, name), 1)

    def run(self, spec: PolicySpec, case: Case, on_batch: Callable[[int], None] | None = None,
            seed: int | None = None) -> dict[str, np.ndarray]:
        """``{kpi: (episodes,) array}`` of ``spec`` playing ``case`` (``seed``: default
        :attr:`seed`)."""
        seed = self.seed if seed is None else seed
        if spec.kind == "llm":
            return self._run_llm(spec, case, on_batch, seed)
        leader, follower = build_policy(spec, case.scenario.cell, where=case.label)
        if case.legacy_ues:
            follower = MixedFollower(follower, make_follower("s_aloha"), case.legacy_ues)
        return run_episodes(case.scenario, leader, follower, self.episodes,
                            min(self.n_envs, self.episodes), seed, on_batch)

    # ----------------------------------------------------------------------------- LLM
    def _run_llm(self, spec: PolicySpec, case: Case, on_batch, seed: int
                 ) -> dict[str, np.ndarray]:
        import torch

        from trainers.policy.chat import chat_render
        from trainers.policy.encoding import PromptEncoder
        from trainers.policy.player import GamePlayer
        from trainers.policy.scheduler import load_llm

        policy, tokenizer, trained = load_llm(spec.path_for(case.scenario.cell),
                                              self.base_model, self.device)
        play_config = dataclasses.replace(trained, scenario=case.scenario.to_dict())
        render = chat_render(tokenizer) if play_config.use_chat_template else None
        players: dict[int, GamePlayer] = {}

        def player(size: int) -> GamePlayer:  # one per batch size: B shapes every draw
            if size not in players:
                players[size] = GamePlayer(policy, tokenizer, PromptEncoder(tokenizer),
                                           play_config, n_envs=size, legacy_ues=case.legacy_ues,
                                           seed=seed, render=render)
            return players[size]

        results: dict[str, list[np.ndarray]] = {}
        with torch.no_grad():
            for k, (size, game_seed, policy_seed) in enumerate(
                    batch_seeds(self.episodes, min(self.n_envs, self.episodes), seed)):
                sample_seed = int(policy_seed.generate_state(1)[0])
                _, _, kpis = player(size).play(0, k, play_config.temperature,
                                               (game_seed, sample_seed))
                for kpi, values in kpis.items():
                    results.setdefault(kpi, []).append(np.asarray(values))
                if on_batch is not None:
                    on_batch(size)
        return {kpi: np.concatenate(v) for kpi, v in results.items()}
