"""Evaluate policies on the paper's fixed scenarios: tables (markdown, CSV) and figures (PNG).

    python recipes/evaluate.py --suites ues --episodes 64 \\
        --policies max_weight/dictator round_robin/dictator S-ALOHA=idle/s_aloha \\
                   LLM=llm:runs/tiny-cpu/final MAPPO-G=marl:runs/mappo-cpu/final \\
                   MAPPO-S=marl:runs/mappo-s-I{ues}/final G-MAC=marl:runs/gmac-cpu/final \\
        --training-runs LLM=runs/tiny-cpu --output-dir runs/eval

Policies (``[label=]spec``): a heuristic pair ``LEADER/FOLLOWER``; ``marl:DIR`` (MAPPO or G-MAC,
``{ues}``/``{rbgs}`` in DIR filled per case: MAPPO-S); ``student:DIR`` (a distilled student,
``python -m trainers.student``); ``llm:DIR_OR_REPO`` (Stackelberg PPO
adapters from a run's ``final/`` or the Hub). Suites: ues (I = 2..10), rbgs (N = 3..8), tbler,
traffic (Table III), legacy (Table VII), stress (Table VIII); see ``trainers/evaluation/suites.py``.
Writes ``results.md``, ``results.csv``, ``<suite>.png`` for the sweeps and ``training.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from textgame.config import ConfigError
from textgame.metrics import summarize
from trainers.evaluation.report import SWEEPS, markdown, plot_sweep, plot_training, to_csv
from trainers.evaluation.suites import SUITES, Evaluator, parse_policy, suite_cases

DEFAULT_POLICIES = ("Max-Weight=max_weight/dictator", "Round-Robin=round_robin/dictator",
                    "S-ALOHA=idle/s_aloha", "Random=random/random")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recipes/evaluate.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policies", nargs="+", default=list(DEFAULT_POLICIES),
                   help="policy specs, each optionally 'label=spec'")
    p.add_argument("--suites", nargs="+", default=["ues"], choices=SUITES)
    p.add_argument("--episodes", type=int, default=64, help="episodes per (policy, case)")
    p.add_argument("--envs", type=int, default=16, help="environments in lock step")
    p.add_argument("--seed", type=int, default=0, help="first seed of the environments (shared "
                   "by all policies)")
    p.add_argument("--seeds", type=int, default=1, help="independent seeds per (policy, case), "
                   "pooled into one mean and 95 %% CI")
    p.add_argument("--config", type=Path, default=None,
                   help="YAML base scenario (sections cell/traffic/channel/reward, or under "
                        "'scenario'); default: SPEC's")
    p.add_argument("--base-model", default=None,
                   help="base model of the LLM policies (default: the one their adapters name)")
    p.add_argument("--device", default=None, help="torch device of LLM/MARL policies")
    p.add_argument("--training-runs", nargs="*", default=[],
                   help="'label=RUN_DIR' whose metrics.jsonl go into training.png")
    p.add_argument("--output-dir", type=Path, default=Path("runs/evaluate"))
    p.add_argument("--no-progress", action="store_true")
    return p


def run(args: argparse.Namespace) -> str:
    specs = [parse_policy(text) for text in args.policies]
    base = None
    if args.config is not None:
        data = yaml.safe_load(args.config.read_text()) or {}
        base = data.get("scenario", data)
    cases = [case for suite in args.suites for case in suite_cases(suite, base)]
    evaluator = Evaluator(args.episodes, args.envs, args.seed, args.device, args.base_model)
    rows = []
    total = len(specs) * len(cases) * args.episodes * args.seeds
    with tqdm(total=total, unit="ep", disable=args.no_progress, file=sys.stderr) as bar:
        for case in cases:
            for spec in specs:
                bar.set_postfix_str(f"{case.label} {spec.label}")
                results = [evaluator.run(spec, case, bar.update, seed=args.seed + k)
                           for k in range(args.seeds)]
                rows.append({"policy": spec.label, "suite": case.suite, "case": case.label,
                             "x": case.x, "kpis": summarize(results)})
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    (out / "results.md").write_text(table)
    (out / "results.csv").write_text(to_csv(rows))
    figures = [plot_sweep(rows, suite, out / f"{suite}.png") for suite in args.suites
               if suite in SWEEPS]
    if args.training_runs:
        runs = dict(item.split("=", 1) if "=" in item else (Path(item).name, item)
                    for item in args.training_runs)
        figures.append(plot_training(runs, out / "training.png"))
    files = [out / "results.md", out / "results.csv", *figures]
    return table + "\nwrote " + ", ".join(str(f) for f in files) + "\n"


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("episodes", "envs", "seeds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} = {getattr(args, name)} is invalid; allowed: >= 1")
    try:
        sys.stdout.write(run(args))
    except (ConfigError, ValueError) as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
