"""Training cost per PPO epoch next to the paper's Table IX (Llama 1B on eight A800s), profiled.

    python benchmarks/bench_train.py                                   # CPU default, ~3 min
    python benchmarks/bench_train.py --spec llama-3.2-1b --scale 0.0625 --ttis 10 --envs 1 4
    python benchmarks/bench_train.py --spec /tmp/smollm2-135m --envs 2 --ttis 2 --shared-prefix 0 1
    python benchmarks/bench_train.py --spec llama-3.2-1b --device cuda   # the GPU table:
        # bf16 LoRA and 4-bit QLoRA, I = 5, N = 4, T = 50, B in {1, 8, 32}

The policy is built and trained by the same code as ``recipes/ppo_llama1b.py``: a base model
directory loaded by ``StackelbergPolicy.from_model_config`` (bitsandbytes NF4 for QLoRA), LoRA
r = 16 on every projection, ``StackelbergPPOTrainer.train_epoch`` (rollout of B environments,
then each role's PPO update). Specs: ``tiny`` (the offline model of
``trainers.policy.named_models``),
``llama-3.2-1b``: Llama-3.2-1B's architecture (hidden 2048, 16 layers, 32 heads, 8 KV heads,
intermediate 8192, tied embeddings, 128256 output rows) with random weights, built from a
``LlamaConfig`` over the tiny game tokenizer, so nothing is downloaded and the LM head costs
what the real one does (``--scale`` shrinks width, heads and depth, not the vocabulary, for
CPUs), or the path of any checkpoint directory (model + tokenizer, e.g. SmolLM2-135M).

Per configuration (shared prefix x precision x B, each in a fresh process so peak memories do
not mix), after one warm-up epoch: rollout and update seconds, decisions per second, decision
latency per TTI (the leader and all followers of the B environments: tokenising, prefill, PAG
decoding; with B = 1 the single-environment figure the paper calls decision delay), seconds per
episode amortised over the B episodes of an epoch, peak GPU memory and peak process RSS; and the
epoch's profile (``epoch_profile.py``): rollout prefill, decode steps and grammar masks, update
forward, backward, optimizer, reference pass and mask replay, the update's tokens per second,
its FLOP/s next to this machine's dense matmul FLOP/s in the compute dtype, and its own peak
memory. ``--shared-prefix 0 1`` runs the update without and with the shared meta-prompt
(``StackelbergPPOConfig.shared_prefix_update``) side by side and prints their ratios;
``--group-by-prefix 0 1`` adds minibatches grouped by meta-prompt and length
(``StackelbergPPOConfig.group_by_prefix``); ``--trainable-layers 0 4`` adapters on every layer
and on the top 4 over the frozen trunk (``StackelbergPPOConfig.trainable_layers``), with the
epoch, update-per-decision and rollout ratios of each k against all layers.

    python benchmarks/bench_train.py --spec ~/.cache/agentic-mac/smollm2-135m-instruct \
        --precision fp32-lora --envs 4 --ues 3 4 5 --threads 2 --trainable-layers 0 2 4 8
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAPER = {"peak_memory_gb": 54.46, "episode_s": 6.72, "decision_ms": 12.85}  # Table IX
TARGETS = {"qlora_peak_gb": 8.0, "episode_s": 0.5, "decision_ms": 12.85}
LLAMA_3_2_1B = {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
                "num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 128256,
                "head_dim": 64, "rope_theta": 500000.0}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PRECISIONS = ("bf16-lora", "qlora-4bit", "fp32-lora")
FIELDS = ("rollout_s", "update_s", "epoch_s", "decisions_per_s", "tti_latency_ms", "episode_s",
          "peak_gpu_gib", "peak_rss_gib")
PROFILE = (("prefill_s", "prefill s"), ("decode_s", "decode s"), ("mask_s", "masks s"),
           ("update_forward_s", "upd fwd s"), ("backward_s", "bwd s"), ("optimizer_s", "optim s"),
           ("reference_s", "ref s"), ("update_masks_s", "upd masks s"),
           ("update_ms_per_decision", "upd ms/decision"),
           ("update_cpu_ms_per_decision", "upd CPU ms/decision"),
           ("update_tokens_per_s", "upd tok/s"),
           ("update_gflops", "upd GFLOP"),
           ("update_gflop_per_s", "upd GFLOP/s"), ("matmul_gflop_per_s", "matmul GFLOP/s"),
           ("peak_share", "share of peak"), ("update_peak_gib", "upd peak GiB"))


# ------------------------------------------------------------------------------ the model
def llama_config(args, tokenizer):
    """Llama-3.2-1B's config (random weights), width/heads/depth times ``--scale``."""
    from transformers import LlamaConfig

    spec = dict(LLAMA_3_2_1B)
    heads = max(1, round(spec["num_attention_heads"] * args.scale))
    spec.update(num_attention_heads=heads, hidden_size=heads * spec["head_dim"],
                num_key_value_heads=max(1, round(spec["num_key_value_heads"] * args.scale)),
                intermediate_size=max(8, round(spec["intermediate_size"] * args.scale)),
                num_hidden_layers=max(1, round(spec["num_hidden_layers"] * args.scale)))
    for name, value in (("hidden_size", args.hidden), ("num_hidden_layers", args.layers)):
        if value:
            spec[name] = value
    if args.hidden:
        spec["num_attention_heads"] = max(1, args.hidden // spec["head_dim"])
        spec["intermediate_size"] = 4 * args.hidden
    spec["num_key_value_heads"] = min(spec["num_key_value_heads"], spec["num_attention_heads"])
    return LlamaConfig(**spec, tie_word_embeddings=True, max_position_embeddings=4096,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)


def model_dir(args) -> tuple[Path, str]:
    """(directory of the base model + tokenizer, description); built once per spec."""
    import torch
    from transformers import LlamaForCausalLM

    from trainers.policy.named_models import build_tiny_model

    if args.spec not in ("tiny", "llama-3.2-1b"):  # a checkpoint directory
        c = json.loads((Path(args.spec) / "config.json").read_text())
        return Path(args.spec), (f"{Path(args.spec).name} h{c['hidden_size']} "
                                 f"l{c['num_hidden_layers']} ({c['vocab_size']} rows)")
    _, tokenizer = build_tiny_model(args.cache_dir)
    if args.spec == "tiny":
        c = json.loads((Path(tokenizer.name_or_path) / "config.json").read_text())
        return Path(tokenizer.name_or_path), (f"tiny Llama h{c['hidden_size']} "
                                              f"l{c['num_hidden_layers']} ({c['vocab_size']} rows)")
    config = llama_config(args, tokenizer)
    name = (f"llama-3.2-1b-arch-h{config.hidden_size}-l{config.num_hidden_layers}-"
            f"a{config.num_attention_heads}-kv{config.num_key_value_heads}-"
            f"i{config.intermediate_size}-v{config.vocab_size}")
    path = Path(args.cache_dir) / name
    if not (path / "config.json").is_file():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = LlamaForCausalLM(config).to(torch.bfloat16)  # random weights, no download
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=args.cache_dir))
        tokenizer.save_pretrained(staging)
        model.save_pretrained(staging)
        staging.rename(path)
    params = (config.vocab_size * config.hidden_size + config.num_hidden_layers * (
        2 * config.hidden_size ** 2 * (1 + config.num_key_value_heads
                                       / config.num_attention_heads)
        + 3 * config.hidden_size * config.intermediate_size)) / 1e6
    return path, (f"Llama-3.2-1B arch h{config.hidden_size} l{config.num_hidden_layers} "
                  f"a{config.num_attention_heads}/{config.num_key_value_heads} "
                  f"i{config.intermediate_size} ({config.vocab_size} rows, {params:.0f} M params)")


def model_config(path: Path, precision: str, device: str):
    """TRL ``ModelConfig`` of the recipes (configs/llama1b_bf16.yaml, llama1b_qlora.yaml)."""
    from trl import ModelConfig

    compute = "bfloat16" if precision == "bf16-lora" or device == "cuda" else "float32"
    if precision == "fp32-lora":
        compute = "float32"
    kwargs = dict(model_name_or_path=str(path), dtype=compute, lora_r=16, lora_alpha=32,
                  lora_dropout=0.0, lora_target_modules=LORA_TARGETS)
    if precision == "qlora-4bit":
        kwargs.update(load_in_4bit=True, bnb_4bit_quant_type="nf4", use_bnb_nested_quant=True)
    return ModelConfig(**kwargs), compute


# --------------------------------------------------------------------- one configuration
def measure(args, precision: str, envs: int, shared: bool, grouped: bool = False,
            trainable_layers: int = 0) -> dict:
    """Figures of one (precision, B, shared prefix, grouped minibatches, k) run in this
    process."""
    import torch
    from epoch_profile import EpochProfile, matmul_peak, rss_high_water_gib
    from transformers import AutoTokenizer

    from trainers.policy.models import StackelbergPolicy
    from trainers.stackelberg.config import StackelbergPPOConfig
    from trainers.stackelberg.trainer import StackelbergPPOTrainer

    torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    path, description = model_dir(args)
    mc, compute = model_config(path, precision, args.device)
    config = StackelbergPPOConfig(
        scenario={"cell": {"ue_counts": args.ues, "n_rbgs": args.rbgs,
                           "episode_ttis": args.ttis}},
        n_envs=envs, episodes_per_epoch=envs, total_epochs=1000, minibatch_size=args.minibatch,
        mixed_precision="bf16" if compute == "bfloat16" else "no",
        gradient_checkpointing=precision == "qlora-4bit", eval_every=0, save_every=0,
        report_to=[], overwrite_output_dir=True,
        output_dir=str(Path(args.cache_dir) / "bench-train-run"),
        prefix_cache=args.prefix_cache, shared_prefix_update=shared, group_by_prefix=grouped,
        trainable_layers=trainable_layers)
    tokenizer = AutoTokenizer.from_pretrained(path)
    policy = StackelbergPolicy.from_model_config(mc, config)
    trainer = StackelbergPPOTrainer(policy, tokenizer, config)
    worker = trainer.worker
    profile = EpochProfile(trainer, cuda)
    peak_flops = matmul_peak(getattr(torch, compute), args.device)
    clock: dict[str, float] = {}

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def timed(name, fn):
        def wrapper(*a, **k):
            sync()
            start = time.perf_counter()
            out = fn(*a, **k)
            sync()
            clock[name] = clock.get(name, 0.0) + time.perf_counter() - start
            return out
        return wrapper

    worker.collect = timed("rollout", worker.collect)  # instance attributes: same train_epoch
    worker._decide = timed("decide", worker._decide)
    rows = []
    for epoch in range(args.epochs + 1):  # epoch 0 warms caches, grammars and allocators
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        clock.clear()
        profile.reset()
        sync()
        start = time.perf_counter()
        record = trainer.train_epoch(epoch)
        sync()
        total = time.perf_counter() - start
        decisions = record["leader/decisions"] + record["follower/decisions"]
        rows.append({
            "rollout_s": clock["rollout"], "update_s": total - clock["rollout"], "epoch_s": total,
            "decisions_per_s": decisions / clock["rollout"],
            "tti_latency_ms": 1e3 * clock["decide"] / args.ttis, "episode_s": total / envs,
            "decisions": decisions,
            "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
            **profile.record(decisions, peak_flops)})
    timed_rows = rows[1:]
    keys = [k for k in timed_rows[0] if k not in ("peak_gpu_gib", "update_peak_gib")]
    out = {k: statistics.median(r[k] for r in timed_rows) for k in keys}
    out["peak_gpu_gib"] = max(r["peak_gpu_gib"] for r in timed_rows) if cuda else None
    out["update_peak_gib"] = max(r["update_peak_gib"] for r in timed_rows)
    out["peak_rss_gib"] = max(  # the update's VmHWM resets also lower the kernel's maximum
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, profile.process_peak_gib,
        rss_high_water_gib())  # Linux KiB
    out.update(precision=precision, compute_dtype=compute, B=envs, model=description,
               shared_prefix=shared, grouped=grouped, trainable_layers=trainable_layers,
               warmup_epoch_s=rows[0]["epoch_s"])
    return out


# ---------------------------------------------------------------------------------- report
def table(result: dict) -> str:
    lines = [f"{result['model']}; I = {result['I']}, N = {result['N']}, T = {result['T']}, "
             f"E = B episodes per epoch, {result['epochs']} timed epoch(s) after one warm-up; "
             f"{result['device']} ({result['machine']}, {result['threads']} threads); "
             f"prefix KV cache {'on' if result['prefix_cache'] else 'off'}",
             "| shared prefix | precision | B | rollout s | update s | decisions/s | "
             "TTI decision ms | s/episode | peak GPU GiB | peak RSS GiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["runs"]:
        gpu = "-" if r["peak_gpu_gib"] is None else f"{r['peak_gpu_gib']:.2f}"
        lines.append(f"| {path_name(r)} | {r['precision']} "
                     f"({r['compute_dtype']}) | {r['B']} | {r['rollout_s']:.2f}"
                     f" | {r['update_s']:.2f} | {r['decisions_per_s']:.0f} | "
                     f"{r['tti_latency_ms']:.1f} | {r['episode_s']:.3f} | {gpu} | "
                     f"{r['peak_rss_gib']:.2f} |")
    lines += ["", "epoch profile (seconds per epoch; update FLOP/s against the measured dense "
              "matmul FLOP/s in the compute dtype, both per second of process CPU time on a CPU;"
              " update peak = RSS high-water mark of the update on CPU, max allocated on GPU)",
              "| shared prefix | precision | B | " + " | ".join(h for _, h in PROFILE) + " |",
              "|---|---|---:|" + "---:|" * len(PROFILE)]
    for r in result["runs"]:
        cells = [f"{r[k]:.1%}" if k == "peak_share" else f"{r[k]:.3g}" for k, _ in PROFILE]
        lines.append(f"| {path_name(r)} | {r['precision']} | {r['B']} | "
                     + " | ".join(cells) + " |")
    lines += ratios(result["runs"])
    lines.append(f"paper Table IX (Llama 1B, 8x A800): {PAPER['peak_memory_gb']} GB peak, "
                 f"{PAPER['episode_s']} s/episode, {PAPER['decision_ms']} ms decision delay; "
                 f"targets on one GPU: QLoRA peak <= {TARGETS['qlora_peak_gb']} GB, "
                 f"<= {TARGETS['episode_s']} s/episode, B = 1 TTI decision <= "
                 f"{TARGETS['decision_ms']} ms")
    if result["device"] != "cuda":
        lines.append("CPU run: the GPU table (--device cuda, bf16 and 4-bit) is still to be "
                     "measured.")
    return "\n".join(lines)


def path_name(run: dict) -> str:
    """The update path of a run: shared prefix off, on, or on with grouped minibatches, and
    the adapters' k (all layers or the top k over the frozen trunk)."""
    name = "on" if run["shared_prefix"] else "off"
    name = name + "+grouped" if run["grouped"] else name
    return name + (f", top {run['trainable_layers']}" if run["trainable_layers"] else "")


def ratios(runs: list[dict]) -> list[str]:
    """Shared prefix off / on for each (precision, B) run both ways (targets: >= 2.5x update
    time per decision, >= 1.5x update peak memory); each other path against the plain off."""
    lines = []
    for on in (r for r in runs if r["shared_prefix"] or r["grouped"] or r["trainable_layers"]):
        off = next((r for r in runs if not r["trainable_layers"] and (
            (not r["shared_prefix"] and not r["grouped"]) if not on["trainable_layers"] else
            (r["shared_prefix"], r["grouped"]) == (on["shared_prefix"], on["grouped"]))
            and r["precision"] == on["precision"] and r["B"] == on["B"]), None)
        if off is None:
            continue
        if on["trainable_layers"]:  # targets: epoch >= 4x, update per decision >= 6x
            lines.append(
                f"{on['precision']} B = {on['B']}: all layers/{path_name(on)}: epoch "
                f"{off['epoch_s'] / on['epoch_s']:.2f}x, update time per decision "
                f"{off['update_ms_per_decision'] / on['update_ms_per_decision']:.2f}x, rollout "
                f"{off['rollout_s'] / on['rollout_s']:.2f}x, peak RSS "
                f"{off['peak_rss_gib']:.2f} -> {on['peak_rss_gib']:.2f} GiB")
            continue
        lines.append(
            f"{on['precision']} B = {on['B']}: shared prefix off/{path_name(on)}: update time "
            f"per decision "
            f"{off['update_ms_per_decision'] / on['update_ms_per_decision']:.2f}x (CPU time "
            f"{off['update_cpu_ms_per_decision'] / on['update_cpu_ms_per_decision']:.2f}x), "
            f"FLOPs {off['update_gflops'] / on['update_gflops']:.2f}x, update peak "
            f"memory {off['update_peak_gib'] / on['update_peak_gib']:.2f}x, reference pass "
            f"{off['reference_s'] / max(on['reference_s'], 1e-9):.2f}x, epoch "
            f"{off['epoch_s'] / on['epoch_s']:.2f}x; share of matmul peak "
            f"{off['peak_share']:.1%} -> {on['peak_share']:.1%}")
    return [""] + lines if lines else []


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default="tiny",
                   help="'tiny', 'llama-3.2-1b' (random weights) or a checkpoint directory")
    p.add_argument("--scale", type=float, default=1.0,
                   help="llama-3.2-1b: width, heads and layers times this (vocabulary kept)")
    p.add_argument("--hidden", type=int, default=0, help="llama-3.2-1b: hidden size override")
    p.add_argument("--layers", type=int, default=0, help="llama-3.2-1b: layer count override")
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=None,
                   help="default: bf16-lora qlora-4bit on cuda, fp32-lora qlora-4bit on CPU")
    p.add_argument("--envs", type=int, nargs="+", default=None,
                   help="B values; default 1 8 32 on cuda, 1 8 on CPU")
    p.add_argument("--ues", type=int, nargs="+", default=[5],
                   help="I: UEs per cell (several: drawn per episode, mixed prompts)")
    p.add_argument("--rbgs", type=int, default=4, help="N: RBGs")
    p.add_argument("--ttis", type=int, default=None, help="T: TTIs per episode (default 50 on "
                   "cuda, 10 on CPU)")
    p.add_argument("--epochs", type=int, default=1, help="timed epochs after the warm-up")
    p.add_argument("--minibatch", type=int, default=32, help="PPO minibatch (decisions)")
    p.add_argument("--prefix-cache", type=int, choices=[0, 1], default=1,
                   help="reuse the meta-prompt's KV cache while acting (1) or not (0)")
    p.add_argument("--shared-prefix", type=int, nargs="+", choices=[0, 1], default=[1],
                   help="the update shares each meta-prompt (1) or runs every prompt in full "
                        "(0); '0 1' measures both side by side")
    p.add_argument("--group-by-prefix", type=int, nargs="+", choices=[0, 1], default=[0],
                   help="minibatches of a plain shuffle (0) or grouped by meta-prompt and "
                        "length (1, StackelbergPPOConfig.group_by_prefix); '0 1' measures both")
    p.add_argument("--trainable-layers", type=int, nargs="+", default=[0],
                   help="k: adapters on the top k layers over the frozen trunk "
                        "(StackelbergPPOConfig.trainable_layers; 0 = all); '0 4' measures both")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (a shared CPU: 1)")
    p.add_argument("--cache-dir", type=Path,
                   default=Path(tempfile.gettempdir()) / "agentic-mac-tiny")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--one", nargs=5, metavar=("PRECISION", "B", "SHARED", "GROUPED", "K"),
                   help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device == "cuda"
    args.precision = args.precision or (["bf16-lora", "qlora-4bit"] if cuda
                                        else ["fp32-lora", "qlora-4bit"])
    args.envs = args.envs or ([1, 8, 32] if cuda else [1, 8])
    args.ttis = args.ttis or (50 if cuda else 10)
    named = args.spec in ("tiny", "llama-3.2-1b")
    if not named and not (Path(args.spec) / "config.json").is_file():
        p.error(f"--spec {args.spec!r}: no config.json there; allowed: 'tiny', 'llama-3.2-1b' or "
                "a checkpoint directory (model + tokenizer)")
    args.prefix_cache = bool(args.prefix_cache)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    if args.one:  # child: one configuration, JSON on the last line
        print(json.dumps(measure(args, args.one[0], int(args.one[1]), bool(int(args.one[2])),
                                 bool(int(args.one[3])), int(args.one[4]))))
        return
    path, _ = model_dir(args)  # build the model directory once, before the children read it
    layers = json.loads((path / "config.json").read_text())["num_hidden_layers"]
    for k in args.trainable_layers:
        if not 0 <= k <= layers:
            p.error(f"--trainable-layers {k}: allowed: integers in [0, {layers}] (0 = all "
                    f"{layers} layers of this model)")
    runs = []
    forwarded = [a for a in sys.argv[1:] if a != "--json"]
    for precision in args.precision:
        for envs in args.envs:
            for shared, grouped, k in itertools.product(args.shared_prefix, args.group_by_prefix,
                                                        args.trainable_layers):
                cmd = [sys.executable, __file__, *forwarded, "--device", args.device,
                       "--one", precision, str(envs), str(shared), str(grouped), str(k)]
                env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                    [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
                done = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if done.returncode:
                    raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    result = {"model": runs[0]["model"], "I": "/".join(map(str, args.ues)), "N": args.rbgs,
              "T": args.ttis,
              "epochs": args.epochs, "device": args.device, "threads": args.threads,
              "machine": platform.processor() or platform.machine(),
              "prefix_cache": args.prefix_cache, "paper": PAPER, "targets": TARGETS,
              "runs": runs}
    print(json.dumps(result, indent=2) if args.json else table(result))


if __name__ == "__main__":
    main()
