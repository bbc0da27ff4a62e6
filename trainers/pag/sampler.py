"""Protocol action grammar (PAG) masking, design §5 eqs. 12-14: one interface for rollout and PPO.

``compile_action_grammar(tokenizer, role, I, N, K)`` -> :class:`ActionGrammar` (cached);
``start_states(grammars)`` (one grammar per row) or ``grammar.start(B)`` -> :class:`GrammarState`
with ``allowed()`` (B, V) bool = V^-, ``advance(tokens)`` and ``done``.
:func:`sample_constrained` generates a batch of actions with a KV cache, masking by eq. 13
(:func:`trainers.ppo.masked_logits`: PPO scores the tokens with the same maths,
:func:`trainers.ppo.token_logprobs`), and :func:`replay_masks` recomputes the masks of recorded
actions, so PPO needs no stored masks.

Conventions. V = the model's output rows (``vocab_size``, >= len(tokenizer)); padding rows
(ids >= len(tokenizer)) are never allowed. Every action ends with EOS and EOS's probability is
part of the action log-prob (in the last slot "1" vs "12" is decided by EOS vs "2"). A row
that has consumed EOS is done: its mask is {EOS}, it is padded with EOS, and the masked
log-prob of that padding is exactly 0. Backends ("llguidance" CFG, the default; "regex";
"none" = PAG off), their one interface and how they are built through Outlines:
:mod:`trainers.pag.backends` (:func:`~trainers.pag.backends.get_backend`).
"""

from __future__ import annotations

import copy
import hashlib
import threading
import time
import weakref
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from grammars import max_action_chars, render_grammar
from trainers.cache_api import cache_kwargs, output_cache
from trainers.pag.backends import GrammarState, Vocab, get_backend
from trainers.ppo import masked_logits

_KEYS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_VOCABS: dict[str, Vocab] = {}
_GRAMMARS: dict[tuple, ActionGrammar] = {}
_LOCK = threading.Lock()


def tokenizer_key(tokenizer) -> str:
    """Content hash of a fast tokenizer (vocabulary, merges, normalisers, EOS).

    Kept per tokenizer object (hashing a 128k vocabulary takes ~0.5 s), so a tokenizer must not
    be changed (e.g. ``add_tokens``) after its first grammar was compiled.
    """
    key = _KEYS.get(tokenizer)
    if key is None:
        if not hasattr(tokenizer, "backend_tokenizer"):
            raise ValueError(f"tokenizer = {type(tokenizer).__name__} is invalid; allowed: a fast "
                             "(Rust-backed) transformers tokenizer")
        backend = copy.copy(tokenizer.backend_tokenizer)
        backend.no_padding()  # padding state changes with every padded call
        backend.no_truncation()
        digest = hashlib.sha256(backend.to_str().encode())
        digest.update(f"eos={tokenizer.eos_token_id}".encode())
        key = _KEYS[tokenizer] = digest.hexdigest()[:20]
    return key


class ActionGrammar:
    """The PAG of one (role, I, N, K) compiled for one tokenizer and V; immutable and shared."""

    def __init__(self, vocab: Vocab, role: str, n_ues: int, n_rbgs: int, ucm_levels: int,
                 backend: str, vocab_size: int) -> None:
        self.role, self.n_ues, self.n_rbgs, self.ucm_levels = role, n_ues, n_rbgs, ucm_levels
        self.backend, self.vocab_size, self.eos_token_id = backend, vocab_size, vocab.eos
        self.max_tokens = max_action_chars(role, n_ues, n_rbgs, ucm_levels) + 1  # + EOS
        self.vocab = vocab
        grammar_backend = get_backend(backend)
        self.source = grammar_backend.source(role, n_ues, n_rbgs, ucm_levels)  # Lark or regex
        self.program = grammar_backend.compile(vocab, self.source, vocab_size)

    def __repr__(self) -> str:
        return (f"ActionGrammar({self.role!r}, n_ues={self.n_ues}, n_rbgs={self.n_rbgs}, "
                f"ucm_levels={self.ucm_levels}, backend={self.backend!r}, V={self.vocab_size})")

    def start(self, batch: int, device: torch.device | str | None = None) -> GrammarState:
        """B rows at the start of this grammar."""
        return start_states([self] * batch, device)

    def decode(self, token_ids: Sequence[int]) -> str:
        """Action text of tokens (without the final EOS): the text the grammar matched."""
        return self.program.decode([int(t) for t in token_ids])


def compile_action_grammar(tokenizer, role: str, n_ues: int, n_rbgs: int, ucm_levels: int,
                           backend: str = "llguidance",
                           vocab_size: int | None = None) -> ActionGrammar:
    """The PAG of ``role`` for I = n_ues, N = n_rbgs, K = ucm_levels over ``tokenizer``.

    ``vocab_size`` = V, the model's output rows (default len(tokenizer)). Cached per
    (tokenizer content, role, I, N, K, backend, V): the same arguments return the same object.
    """
    render_grammar(role, n_ues, n_rbgs, ucm_levels)  # validates, naming the argument
    get_backend(backend)  # validates, naming the allowed backends
    key_tok = tokenizer_key(tokenizer)
    vocab_size = len(tokenizer) if vocab_size is None else vocab_size
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or (
            vocab_size < len(tokenizer)):
        raise ValueError(f"vocab_size = {vocab_size!r} is invalid; allowed: an integer >= "
                         f"len(tokenizer) = {len(tokenizer)} (the model's output rows)")
    key = (key_tok, role, int(n_ues), int(n_rbgs), int(ucm_levels), backend, vocab_size)
    with _LOCK:
        if key not in _GRAMMARS:
            if key_tok not in _VOCABS:
                _VOCABS[key_tok] = Vocab(tokenizer)
            _GRAMMARS[key] = ActionGrammar(_VOCABS[key_tok], *key[1:])
        return _GRAMMARS[key]


def start_states(grammars: Sequence[ActionGrammar],
                 device: torch.device | str | None = None) -> GrammarState:
    """One row per grammar (rows may differ in I, N, K and role; same tokenizer, V, backend)."""
    if len(grammars) == 0:
        raise ValueError("grammars is empty; allowed: one ActionGrammar per row")
    first = grammars[0]
    for i, g in enumerate(grammars):
        if (g.vocab, g.backend, g.vocab_size) != (first.vocab, first.backend, first.vocab_size):
            raise ValueError(f"grammars[{i}] = {g!r} does not match grammars[0] = {first!r}; "
                             "allowed: grammars of one tokenizer, vocab_size and backend")
    return get_backend(first.backend).start(grammars, torch.device(device or "cpu"))


# ------------------------------------------------------------------------ sampling, replay
@dataclass
class ActionSample:
    """A batch of sampled actions; ``(grammars, tokens, lengths)`` replays the masks."""

    tokens: torch.Tensor  # (B, T) long; EOS after the end of each action
    lengths: torch.Tensor  # (B,) long: tokens of the action including its EOS
    finished: torch.Tensor  # (B,) bool: EOS reached within max_new_tokens
    logprobs: torch.Tensor  # (B, T) fp32 masked token log-probs at the temperature; 0 past lengths
    action_logprob: torch.Tensor  # (B,) eq. 12: sum of logprobs
    texts: list[str]  # action texts without EOS
    masks: torch.Tensor | None = None  # (B, T, V) bool, only with return_masks=True


@contextmanager
def _timed(timings: dict | None, key: str, device: torch.device):
    if timings is None:
        yield
        return
    start = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timings[key] = timings.get(key, 0.0) + time.perf_counter() - start


@torch.no_grad()
def sample_constrained(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       grammars: Sequence[ActionGrammar], *, generator: torch.Generator,
                       temperature: float = 1.0, max_new_tokens: int | None = None,
                       greedy: bool = False, return_masks: bool = False,
                       timings: dict | None = None,
                       past_key_values=None,
                       past_mask: torch.Tensor | None = None) -> ActionSample:
    """Sample one action per row of a left-padded prompt batch under its PAG (eqs. 12-14).

    One prefill, then one cached decode step per token; position ids count real tokens only.
    ``past_key_values`` (a cache of Lp columns, e.g. the meta-prompts of
    :class:`trainers.policy.prefix_cache.PrefixCache`) with ``past_mask`` (B, Lp) holds the first
    tokens of each row; ``input_ids`` are then the rest of the prompts.
    ``generator`` must live on the model's device. ``max_new_tokens`` defaults to the longest
    action any row's grammar allows, so no action is cut. ``greedy`` takes the most likely
    allowed token at every step instead of drawing one (log-probs are still those of eq. 12 at
    ``temperature``). ``timings`` (optional dict) gets the seconds spent in "prefill", "decode"
    (the model), "mask" (grammar states, allowed sets and eq. 13) and "sample" (softmax, draw,
    bookkeeping).
    """
    batch, device = input_ids.shape[0], input_ids.device
    if len(grammars) != batch:
        raise ValueError(f"len(grammars) = {len(grammars)} is invalid; allowed: one grammar per "
                         f"row ({batch})")
    if not temperature > 0:
        raise ValueError(f"temperature = {temperature!r} is invalid; allowed: a number > 0")
    if max_new_tokens is not None and (isinstance(max_new_tokens, bool) or not isinstance(
            max_new_tokens, int) or max_new_tokens < 1):
        raise ValueError(f"max_new_tokens = {max_new_tokens!r} is invalid; allowed: None or an "
                         "integer >= 1")
    steps = max_new_tokens or max(g.max_tokens for g in grammars)
    eos = grammars[0].eos_token_id
    with _timed(timings, "mask", device):
        state = start_states(grammars, device)
    attention_mask = attention_mask.long()
    if past_key_values is not None:
        attention_mask = torch.cat([past_mask.long(), attention_mask], dim=1)  # (B, Lp + P)
    position = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1]:]  # (B, P)
    with _timed(timings, "prefill", device):
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position,
                    use_cache=True, logits_to_keep=1, **cache_kwargs(model, past_key_values))
    if out.logits.shape[-1] != state.vocab_size:
        raise ValueError(f"the model has {out.logits.shape[-1]} output rows but the grammars were "
                         f"compiled for vocab_size = {state.vocab_size}")
    next_position = position[:, -1:] + 1  # (B, 1)
    tokens = torch.full((batch, steps), eos, dtype=torch.long, device=device)  # (B, T)
    logprobs = torch.zeros((batch, steps), dtype=torch.float32, device=device)  # (B, T)
    lengths = torch.zeros(batch, dtype=torch.long, device=device)  # (B,)
    masks = []
    with _timed(timings, "mask", device):
        mask = state.allowed()  # (B, V): V^- before token t
    t = 0
    while True:
        with _timed(timings, "mask", device):
            scores = masked_logits(out.logits[:, -1].float() / temperature, mask)  # eq. 13
            live = ~state.done
        with _timed(timings, "sample", device):
            logp = torch.log_softmax(scores, dim=-1)  # = ppo.masked_log_softmax, (B, V)
            token = (logp.argmax(-1) if greedy else  # (B,)
                     torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1))
            tokens[:, t] = token
            logprobs[:, t] = logp.gather(1, token[:, None]).squeeze(1).masked_fill(~live, 0.0)
            lengths += live
        if return_masks:
            masks.append(mask)
        with _timed(timings, "mask", device):
            state.advance(token)
            finished = state.all_done()
            mask = None if finished or t == steps - 1 else state.allowed()
        appended = [token]
        while mask is not None and t < steps - 1 and bool((mask.sum(-1) == 1).all()):
            # Every row's next token is forced (done rows: EOS): its masked log-prob is exactly
            # log 1 = 0 whatever the logits, so it needs no forward of its own; the run of forced
            # tokens joins the model's next step (one forward of (B, 1 + m) tokens).
            t += 1
            forced = mask.to(torch.uint8).argmax(-1)  # (B,) the one allowed token
            live = ~state.done
            tokens[:, t] = forced
            lengths += live
            if return_masks:
                masks.append(mask)
            appended.append(forced)
            with _timed(timings, "mask", device):
                state.advance(forced)
                finished = state.all_done()
                mask = None if finished or t == steps - 1 else state.allowed()
        if mask is None:  # done; every token but the last still runs once, as without forcing
            appended = appended[:-1]  # (their states: trainers.policy.trunk.TrunkCapture)
        if not appended:
            break
        step_ids = torch.stack(appended, dim=1)  # (B, 1 + m)
        width = step_ids.shape[1]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, width)], dim=1)
        step_position = next_position + torch.arange(width, device=device)  # (B, 1 + m)
        with _timed(timings, "decode", device):
            out = model(input_ids=step_ids, attention_mask=attention_mask,
                        position_ids=step_position, use_cache=True, logits_to_keep=1,
                        **cache_kwargs(model, output_cache(out)))
        next_position = next_position + width
        if mask is None:
            break
        t += 1
    tokens, logprobs = tokens[:, :t + 1], logprobs[:, :t + 1]
    done = state.done.clone()
    host_tokens, host_lengths, host_done = tokens.tolist(), lengths.tolist(), done.tolist()
    texts = [g.decode(row[:n - int(d)])
             for g, row, n, d in zip(grammars, host_tokens, host_lengths, host_done, strict=True)]
    return ActionSample(tokens=tokens, lengths=lengths, finished=done, logprobs=logprobs,
                        action_logprob=logprobs.sum(1), texts=texts,
                        masks=torch.stack(masks, 1) if return_masks else None)


def replay_masks(grammars: Sequence[ActionGrammar], tokens: torch.Tensor,
                 lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, V) bool: the masks in force before each recorded token (EOS-padded past lengths).

    Identical to the masks :func:`sample_constrained` used, so PPO recomputes log-probs with
    :func:`trainers.ppo.token_logprobs` under the same V^- (first PPO ratio = 1).
    """
    batch, steps = tokens.shape
    state = start_states(grammars, tokens.device)
    inside = torch.arange(steps, device=tokens.device) < lengths.to(tokens.device)[:, None]
    tokens = tokens.masked_fill(~inside, grammars[0].eos_token_id)  # (B, T)
    out = torch.empty((batch, steps, state.vocab_size), dtype=torch.bool, device=tokens.device)
    for t in range(steps):
        out[:, t] = state.allowed()
        state.advance(tokens[:, t])
    return out
