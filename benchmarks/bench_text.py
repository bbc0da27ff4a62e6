"""Cost of the text layer and PAG masking next to the model's forward passes, per decision.

    python benchmarks/bench_text.py                     # B = 64 envs, tiny model, llguidance, CPU
    python benchmarks/bench_text.py --backend regex --hidden-size 256 --layers 4 --json

One decision batch = the B leader prompts of a TextStackelbergEnv (one DCM per env), then the
follower prompts of all its active UEs. Each batch's wall time is split into: env + prompts (the
text env reading the previous actions, stepping the game and rendering the prompts), tokenise
(left-padded batch encoding), mask (grammar allowed sets, state updates and eq. 13), sample
(softmax and draw), prefill and decode (the model's forward passes, KV-cached) and other (action
texts). Overhead = (env + prompts + tokenise + mask) / total, per role and over all the
decisions of the timed TTIs; target <= 10 %. The model is the random tiny Llama of
``trainers.policy.named_models`` (built offline into ``--cache-dir``).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from textgame.config import CellConfig, ScenarioConfig, replace_checked
from textgame.text_env import TextStackelbergEnv
from trainers.pag.sampler import compile_action_grammar, sample_constrained
from trainers.policy.encoding import PromptEncoder
from trainers.policy.named_models import build_tiny_model

PHASES = ("env+prompts", "tokenise", "mask", "sample", "prefill", "decode", "other")
OVERHEAD = ("env+prompts", "tokenise", "mask")


def decide(model, encoder, prompts, grammars, generator, device, totals, env_seconds):
    """One decision batch; adds its phase times to ``totals`` and returns the action texts."""
    start = time.perf_counter()
    ids, mask = encoder(prompts, device)
    tokenised = time.perf_counter()
    timings: dict[str, float] = {}
    out = sample_constrained(model, ids, mask, grammars, generator=generator, timings=timings)
    total = time.perf_counter() - start
    phases = {"env+prompts": env_seconds, "tokenise": tokenised - start, **timings}
    phases["other"] = total - sum(phases.values()) + env_seconds
    for name in PHASES:
        totals[name] = totals.get(name, 0.0) + phases.get(name, 0.0)
    totals["decisions"] = totals.get("decisions", 0) + len(prompts)
    totals["batches"] = totals.get("batches", 0) + 1
    totals["prompt_tokens"] = totals.get("prompt_tokens", 0) + int(mask.sum())
    return out.texts


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    cache = args.cache_dir or Path(tempfile.gettempdir()) / "agentic-mac-tiny"
    model, tokenizer = build_tiny_model(cache, hidden_size=args.hidden_size, layers=args.layers,
                                        heads=args.heads, split_digits=not args.merged_digits)
    device = torch.device(args.device)
    model.to(device)
    cell = replace_checked(CellConfig(), n_rbgs=args.rbgs, episode_ttis=args.ttis + 1)
    env = TextStackelbergEnv(ScenarioConfig(cell=cell), n_envs=args.envs)
    generator = torch.Generator(device).manual_seed(args.seed)
    encoder = PromptEncoder(tokenizer)  # verifies its line cache during the warm-up TTI
    vocab, k = model.config.vocab_size, cell.ucm_levels

    def grammar(role, n_ues):
        return compile_action_grammar(tokenizer, role, int(n_ues), cell.n_rbgs, k, args.backend,
                                      vocab)

    for n_ues in range(cell.max_ues + 1):  # compiling is a one-off, not part of a decision
        grammar("leader", n_ues), grammar("follower", n_ues)
    stats = {"leader": {}, "follower": {}}
    start = time.perf_counter()
    prompts = env.reset(args.seed)
    env_seconds = time.perf_counter() - start
    for tti in range(args.ttis + 1):
        warm = tti > 0  # the first TTI warms caches and allocators
        n_active = env.game.leader_obs().n_active
        texts = decide(model, encoder, prompts, [grammar("leader", i) for i in n_active],
                       generator, device, stats["leader"] if warm else {}, env_seconds)
        start = time.perf_counter()
        prompts = env.step_leader(texts)
        env_seconds = time.perf_counter() - start
        grammars = [grammar("follower", n_active[b]) for b, _ in env.follower_slots]
        texts = decide(model, encoder, prompts, grammars, generator, device,
                       stats["follower"] if warm else {}, env_seconds)
        start = time.perf_counter()
        prompts = env.step_followers(texts).leader_prompts
        env_seconds = time.perf_counter() - start
    for role in stats.values():
        total = sum(role[p] for p in PHASES)
        role["total"] = total
        role["overhead_pct"] = 100 * sum(role[p] for p in OVERHEAD) / total
        role["us_per_decision"] = 1e6 * total / role["decisions"]
    both = sum(stats[r]["total"] for r in stats)  # every decision of the TTIs: B + active UEs
    stats["overhead_pct_all"] = 100 * sum(stats[r][p] for r in stats for p in OVERHEAD) / both
    return {"B": args.envs, "N": args.rbgs, "ttis": args.ttis, "backend": args.backend,
            "device": str(device), "threads": args.threads, "vocab_rows": vocab,
            "model": f"llama h{args.hidden_size} l{args.layers} a{args.heads}",
            "tokenizer": "merged digits" if args.merged_digits else "split digits",
            "machine": platform.processor() or platform.machine(), **stats}


def table(result: dict) -> str:
    lines = [f"B = {result['B']} envs, N = {result['N']}, {result['ttis']} TTIs, "
             f"{result['backend']}, {result['model']} ({result['vocab_rows']} rows, "
             f"{result['tokenizer']}), {result['device']}, {result['threads']} threads",
             f"{'phase':<14}{'leader ms/batch':>17}{'us/decision':>13}{'%':>7}"
             f"{'follower ms/batch':>19}{'us/decision':>13}{'%':>7}"]
    for phase in (*PHASES, "total"):
        cells = []
        for role in ("leader", "follower"):
            r = result[role]
            cells.append(f"{1e3 * r[phase] / r['batches']:>17.2f}"
                         f"{1e6 * r[phase] / r['decisions']:>13.1f}"
                         f"{100 * r[phase] / r['total']:>7.1f}")
        lines.append(f"{phase:<14}" + "".join(f"{c}{'  ' if i == 0 else ''}"
                                               for i, c in enumerate(cells)))
    lines.append(f"overhead (env+prompts + tokenise + mask) / total: leader "
                 f"{result['leader']['overhead_pct']:.1f} %, follower "
                 f"{result['follower']['overhead_pct']:.1f} %, all decisions "
                 f"{result['overhead_pct_all']:.1f} % (target <= 10 %)")
    per_batch = [result[r]["decisions"] / result[r]["batches"] for r in ("leader", "follower")]
    lines.append(f"decisions per batch: leader {per_batch[0]:.0f}, follower {per_batch[1]:.0f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", type=int, default=64, help="B: parallel envs (leader batch size)")
    p.add_argument("--rbgs", type=int, default=4, help="N: RBGs")
    p.add_argument("--ttis", type=int, default=5, help="timed TTIs (after one warm-up TTI)")
    p.add_argument("--backend", default="llguidance", choices=["llguidance", "regex", "none"])
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--merged-digits", action="store_true", help="tokenizer that merges digits")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--cache-dir", type=Path, default=None, help="tiny model cache")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args()
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else table(result))


if __name__ == "__main__":
    main()
