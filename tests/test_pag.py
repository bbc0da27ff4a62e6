"""PAG masking (design §5, eqs. 12-14): constrained sampling, replay, log-probs, PAG off."""

import copy
import functools
import re

import pytest
import torch
from transformers import AutoTokenizer

from textgame.config import CellConfig, ScenarioConfig, replace_checked
from textgame.parsing import (
    format_dcm,
    format_follower,
    parse_dcm,
    parse_follower,
    read_dcm,
    read_follower,
)
from textgame.text_env import TextStackelbergEnv
from trainers.pag.backends import GrammarProgram, GrammarState
from trainers.pag.sampler import (
    compile_action_grammar,
    replay_masks,
    sample_constrained,
    start_states,
)
from trainers.policy.encoding import encode_prompts
from trainers.policy.named_models import build_tiny_model
from trainers.ppo import masked_logits, token_logprobs

K = 4
SIZES = [(i, n) for i in range(1, 13) for n in range(1, 9)]  # every I in 1..12, N in 1..8
SEEDS = range(4)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session", params=[True, False], ids=["split-digits", "merged-digits"])
def tiny(request, tiny_cache):
    """(model, tokenizer): both test tokenizers (design §5: tokenizers that merge digits work)."""
    return build_tiny_model(tiny_cache, split_digits=request.param)


@functools.cache
def game_prompts() -> tuple[list[str], list[str]]:
    """Real leader and follower prompts of the text game."""
    env = TextStackelbergEnv(ScenarioConfig(cell=replace_checked(CellConfig(), ue_counts=(5,))), 2)
    leader = env.reset(0)
    return leader, env.step_leader(["1 2 0 3", "5 4 0 0"])


def grammars_for(tokenizer, role, backend, vocab_size, sizes=SIZES):
    return [compile_action_grammar(tokenizer, role, i, n, K, backend, vocab_size)
            for i, n in sizes]


def sample(model, tokenizer, grammars, seed, role, temperature=1.5, **kwargs):
    prompts = game_prompts()[role == "follower"]
    ids, mask = encode_prompts(tokenizer, [prompts[b % len(prompts)] for b in range(len(grammars))])
    generator = torch.Generator().manual_seed(seed)
    return ids, mask, sample_constrained(model, ids, mask, grammars, temperature=temperature,
                                         generator=generator, **kwargs)


def parse(role, text, grammar):
    if role == "leader":
        return format_dcm(parse_dcm(text, grammar.n_rbgs, grammar.n_ues))
    return format_follower(*parse_follower(text, grammar.n_rbgs, grammar.ucm_levels))


# ------------------------------------------------------------------------------ sampling
@pytest.mark.parametrize("backend", ["llguidance", "regex"])
@pytest.mark.parametrize("role", ["leader", "follower"])
def test_constrained_samples_always_parse_to_valid_actions(tiny, role, backend):
    model, tokenizer = tiny
    grammars = grammars_for(tokenizer, role, backend, model.config.vocab_size)
    for seed in SEEDS:
        _, _, out = sample(model, tokenizer, grammars, seed, role)
        assert out.finished.all()
        for grammar, text in zip(grammars, out.texts, strict=True):
            assert parse(role, text, grammar) == text  # strict parse, canonical text


def test_both_backends_sample_the_same_actions_from_the_same_seed(tiny):
    model, tokenizer = tiny
    outs = [sample(model, tokenizer, grammars_for(tokenizer, "leader", b, model.config.vocab_size),
                   7, "leader")[2] for b in ("llguidance", "regex")]
    assert torch.equal(outs[0].tokens, outs[1].tokens) and outs[0].texts == outs[1].texts
    assert torch.equal(outs[0].action_logprob, outs[1].action_logprob)


def test_sampling_is_reproducible_from_the_generator(tiny):
    model, tokenizer = tiny
    grammars = grammars_for(tokenizer, "follower", "llguidance", model.config.vocab_size)
    first, second = (sample(model, tokenizer, grammars, 3, "follower")[2] for _ in range(2))
    assert torch.equal(first.tokens, second.tokens) and first.texts == second.texts


def test_finished_rows_are_padded_with_eos_at_log_prob_zero(tiny):
    model, tokenizer = tiny
    grammars = grammars_for(tokenizer, "leader", "regex", model.config.vocab_size,
                            [(12, 8), (1, 1)])
    _, _, out = sample(model, tokenizer, grammars, 0, "leader", return_masks=True)
    eos = tokenizer.eos_token_id
    short = int(out.lengths[1])
    assert short == 2 and out.tokens.shape[1] > short  # "0" or "1", then EOS
    assert (out.tokens[1, short - 1:] == eos).all() and (out.logprobs[1, short:] == 0).all()
    assert out.masks[1, short:].sum(-1).eq(1).all() and out.masks[1, short:, eos].all()
    assert torch.equal(out.action_logprob, out.logprobs.sum(1))


def test_max_new_tokens_cuts_actions_and_they_still_replay(tiny):
    model, tokenizer = tiny
    grammars = grammars_for(tokenizer, "leader", "llguidance", model.config.vocab_size,
                            [(12, 4)] * 3)
    _, _, out = sample(model, tokenizer, grammars, 1, "leader", max_new_tokens=2,
                       return_masks=True)
    assert not out.finished.any() and out.lengths.tolist() == [2, 2, 2]
    assert torch.equal(replay_masks(grammars, out.tokens, out.lengths), out.masks)


def test_prompts_are_left_padded_with_the_tokenizers_ids(tiny):
    _, tokenizer = tiny
    prompts = ["TTI 3\nDCM:", "You are the base station\nDCM:"]
    ids, mask = encode_prompts(tokenizer, prompts)
    for row, attention, expected in zip(ids, mask, tokenizer(prompts)["input_ids"], strict=True):
        assert row[attention.bool()].tolist() == expected
        assert attention.tolist() == sorted(attention.tolist())  # padding on the left
        assert (row[~attention.bool()] == tokenizer.pad_token_id).all()


# -------------------------------------------------------------------------------- masks
@pytest.mark.parametrize("role", ["leader", "follower"])
def test_replayed_masks_equal_sampling_masks_and_the_backends_agree(tiny, role):
    model, tokenizer = tiny
    vocab_size = model.config.vocab_size
    for backend, other in (("llguidance", "regex"), ("regex", "llguidance")):
        grammars = grammars_for(tokenizer, role, backend, vocab_size)
        _, _, out = sample(model, tokenizer, grammars, 11, role, return_masks=True)
        assert torch.equal(replay_masks(grammars, out.tokens, out.lengths), out.masks)
        others = grammars_for(tokenizer, role, other, vocab_size)
        assert torch.equal(replay_masks(others, out.tokens, out.lengths), out.masks)


@pytest.mark.parametrize("backend", ["llguidance", "regex", "none"])
def test_padding_rows_of_the_model_vocabulary_are_never_allowed(tiny, backend):
    model, tokenizer = tiny
    assert model.config.vocab_size > len(tokenizer)
    grammars = grammars_for(tokenizer, "leader", backend, model.config.vocab_size)
    _, _, out = sample(model, tokenizer, grammars, 5, "leader", return_masks=True)
    assert not out.masks[..., len(tokenizer):].any()
    assert out.masks.any(-1).all()  # never an empty V^-


@pytest.mark.parametrize("backend", ["llguidance", "regex"])
@pytest.mark.parametrize("text, valid", [("12 0 3 12", True), ("1 12 2 0", True),
                                         ("0 0 0 13", False), ("13 0 0 0", False),
                                         ("1 2 3", False), ("1 2 3 4 5", False)])
def test_token_sequences_are_accepted_exactly_when_the_text_is_valid(tiny, backend, text, valid):
    model, tokenizer = tiny
    grammar = compile_action_grammar(tokenizer, "leader", 12, 4, K, backend)
    state = grammar.start(1)
    tokens = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
    try:
        for token in tokens:
            assert state.allowed()[0, token]
            state.advance(torch.tensor([token]))
    except (AssertionError, ValueError):
        assert not valid
    else:
        assert valid and bool(state.done[0])


@pytest.mark.parametrize("backend", ["llguidance", "regex", "none"])
def test_advance_rejects_a_token_outside_the_mask(tiny, backend):
    model, tokenizer = tiny
    grammar = compile_action_grammar(tokenizer, "follower", 3, 4, K, backend,
                                     model.config.vocab_size)
    one = tokenizer.convert_tokens_to_ids("1")
    bad = len(tokenizer) if backend == "none" else tokenizer.convert_tokens_to_ids("x")
    with pytest.raises(ValueError, match=r"row 1: token \d+ is not allowed by ActionGrammar"):
        grammar.start(2).advance(torch.tensor([one, bad]))


@pytest.mark.parametrize("backend", ["llguidance", "regex", "none"])
def test_after_eos_only_eos_is_allowed(tiny, backend):
    model, tokenizer = tiny
    eos, one = tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("1")
    state = compile_action_grammar(tokenizer, "leader", 3, 1, K, backend).start(2)
    state.advance(torch.tensor([one, one]))
    state.advance(torch.tensor([eos, eos]))
    allowed = state.allowed()
    assert state.done.all() and allowed.sum(1).tolist() == [1, 1] and allowed[:, eos].all()
    with pytest.raises(ValueError, match="row 0: token"):
        state.advance(torch.tensor([one, eos]))


def test_masked_logits_are_minus_infinity_outside_the_allowed_set():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]])
    mask = torch.tensor([[True, False, True], [False, False, True]])
    out = masked_logits(logits, mask)
    assert torch.equal(out[mask], logits[mask]) and torch.isneginf(out[~mask]).all()


# ---------------------------------------------------------------------------- log-probs
@pytest.mark.parametrize("backend", ["llguidance", "regex"])
@pytest.mark.parametrize("role", ["leader", "follower"])
def test_action_logprob_equals_a_plain_forward_pass_over_prompt_and_action(tiny, role, backend):
    model, tokenizer = tiny
    temperature = 0.7
    grammars = grammars_for(tokenizer, role, backend, model.config.vocab_size, SIZES[::5])
    ids, mask, out = sample(model, tokenizer, grammars, 2, role, temperature=temperature)
    steps = out.tokens.shape[1]
    full_mask = torch.cat([mask, torch.ones_like(out.tokens)], 1)
    position = (full_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():  # no cache: one forward over prompt + action
        logits = model(input_ids=torch.cat([ids, out.tokens], 1), attention_mask=full_mask,
                       position_ids=position).logits[:, ids.shape[1] - 1:-1]
    allowed = replay_masks(grammars, out.tokens, out.lengths)
    scores = (logits.float() / temperature).masked_fill(~allowed, float("-inf"))
    chosen = torch.log_softmax(scores, -1).gather(-1, out.tokens[..., None]).squeeze(-1)
    inside = torch.arange(steps) < out.lengths[:, None]
    expected = torch.where(inside, chosen, torch.zeros_like(chosen))
    assert (out.logprobs - expected).abs().max() < 1e-5
    assert (out.action_logprob - expected.sum(1)).abs().max() < 1e-5
    ppo = token_logprobs(logits, allowed, out.tokens, temperature)  # the PPO path
    assert torch.equal(torch.where(inside, ppo, torch.zeros_like(ppo)), expected)


@pytest.mark.parametrize("greedy", [True, False])
@pytest.mark.parametrize("role", ["leader", "follower"])
def test_forced_tokens_join_the_next_forward_and_score_zero(tiny, role, greedy):
    """Where every row's grammar allows one token only (the DCM's single spaces at I < 10, EOS
    after a last one-digit slot, a finished row's EOS), the sampler takes it without a forward
    of its own: it joins the next forward, and its log-prob is exactly 0."""
    model, tokenizer = tiny
    grammars = grammars_for(tokenizer, role, "llguidance", model.config.vocab_size,
                            [(4, 4), (3, 4), (5, 4), (2, 4)])
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        _, _, out = sample(model, tokenizer, grammars, 3, role, greedy=greedy)
    finally:
        handle.remove()
    allowed = replay_masks(grammars, out.tokens, out.lengths)  # (B, T, V)
    forced = (allowed.sum(-1) == 1).all(0)  # (T,): no row has a choice
    # one forward per group of a sampled token and the forced ones after it, the last group
    # without its last token (which predicts nothing); one token per step would take T
    assert len(calls) == 1 + int((~forced[1:]).sum()) + int(forced[-1])
    assert len(calls) == out.tokens.shape[1] - int(forced[1:-1].sum())
    assert (out.logprobs[:, forced] == 0).all()
    pieces = [tokenizer.decode([i]) for i in range(len(tokenizer))]
    if role == "leader" and not any(" " in p and any(c.isdigit() for c in p) for p in pieces):
        assert forced.sum() >= 3  # no token joins a space and a digit: the 3 spaces are forced


def test_left_padding_does_not_change_action_logprobs(tiny):
    model, tokenizer = tiny
    prompts = ["DCM:", game_prompts()[0][0]]  # 2 tokens and a few hundred: heavy left padding
    grammars = [compile_action_grammar(tokenizer, "leader", 5, 4, K, "regex",
                                       model.config.vocab_size)] * 2
    ids, mask = encode_prompts(tokenizer, prompts)
    out = sample_constrained(model, ids, mask, grammars, temperature=0.7,
                             generator=torch.Generator().manual_seed(4))
    allowed = replay_masks(grammars, out.tokens, out.lengths)
    for b, prompt in enumerate(prompts):  # each row alone: no padding, default positions
        alone = torch.tensor([tokenizer(prompt)["input_ids"] + out.tokens[b].tolist()])
        with torch.no_grad():
            logits = model(input_ids=alone).logits[0, -out.tokens.shape[1] - 1:-1]
        n = int(out.lengths[b])
        logp = token_logprobs(logits[:n], allowed[b, :n], out.tokens[b, :n], 0.7)
        assert abs(float(logp.sum() - out.action_logprob[b])) < 1e-5


# ------------------------------------------------------------------------------- PAG off
def test_free_generation_gives_invalid_actions_and_the_episode_runs_to_the_end(tiny):
    model, tokenizer = tiny
    cell = replace_checked(CellConfig(), ue_counts=(3,), episode_ttis=3)
    env = TextStackelbergEnv(ScenarioConfig(cell=cell), n_envs=2)
    vocab_size, generator = model.config.vocab_size, torch.Generator().manual_seed(0)

    def act(prompts, role):
        grammars = [compile_action_grammar(tokenizer, role, 3, 4, K, "none", vocab_size)] * len(
            prompts)
        ids, mask = encode_prompts(tokenizer, prompts)
        return sample_constrained(model, ids, mask, grammars, generator=generator).texts

    prompts, invalid, step = env.reset(0), 0, None
    while prompts is not None:
        dcm_texts = act(prompts, "leader")
        invalid += sum(read_dcm(t, 4, 3)[1] for t in dcm_texts)
        actions = act(env.step_leader(dcm_texts), "follower")
        invalid += sum(read_follower(t, 4, K)[2] for t in actions)
        step = env.step_followers(actions)
        prompts = step.leader_prompts
    assert step.done and invalid > 0
    assert (step.info["kpis"]["invalid_action_rate"] > 0).all()


# ------------------------------------------------------------------------------ compiling
def test_compile_is_cached_per_tokenizer_content_and_arguments(tiny):
    model, tokenizer = tiny
    grammar = compile_action_grammar(tokenizer, "leader", 12, 4, K)
    assert compile_action_grammar(tokenizer, "leader", 12, 4, K) is grammar
    reloaded = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    assert compile_action_grammar(reloaded, "leader", 12, 4, K, "llguidance") is grammar
    for other in [("leader", 11, 4, K), ("leader", 12, 5, K), ("follower", 12, 4, K)]:
        assert compile_action_grammar(tokenizer, *other) is not grammar
    assert compile_action_grammar(tokenizer, "leader", 12, 4, K, "regex") is not grammar
    assert compile_action_grammar(tokenizer, "leader", 12, 4, K,
                                  vocab_size=model.config.vocab_size) is not grammar


def test_compiling_leaves_the_callers_tokenizer_unchanged(tiny):
    _, tokenizer = tiny
    mine = copy.deepcopy(tokenizer)
    mine.pad_token = None
    for backend in ("llguidance", "regex"):
        compile_action_grammar(mine, "follower", 2, 3, K, backend)
    assert mine.pad_token is None and mine.padding_side == "right"


@pytest.mark.parametrize("kwargs, message", [
    ({"backend": "xgrammar"}, "backend = 'xgrammar' is invalid; allowed: one of ['llguidance', "
                              "'regex', 'none']"),
    ({"vocab_size": 10}, "vocab_size = 10 is invalid; allowed: an integer >= len(tokenizer)"),
    ({"role": "ue"}, "role = 'ue' is invalid"), ({"n_rbgs": 0}, "n_rbgs = 0 is invalid")])
def test_compile_rejects_invalid_arguments(tiny, kwargs, message):
    _, tokenizer = tiny
    args = {"role": "leader", "n_ues": 3, "n_rbgs": 4, "ucm_levels": K} | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        compile_action_grammar(tokenizer, **args)


@pytest.mark.parametrize("backend", ["llguidance", "regex", "none"])
def test_every_backend_compiles_a_program_and_starts_a_state_of_the_interface(tiny, backend):
    _, tokenizer = tiny
    grammar = compile_action_grammar(tokenizer, "leader", 3, 4, K, backend)
    state = grammar.start(2)
    assert isinstance(grammar.program, GrammarProgram) and isinstance(state, GrammarState)
    assert state.allowed().shape == (2, len(tokenizer)) and not state.all_done()


def test_one_batch_needs_one_backend_and_vocabulary(tiny):
    _, tokenizer = tiny
    grammars = [compile_action_grammar(tokenizer, "leader", 3, 4, K, b) for b in ("llguidance",
                                                                                "regex")]
    with pytest.raises(ValueError, match=r"grammars\[1\] = .* does not match grammars\[0\]"):
        start_states(grammars)


def test_sampling_rejects_a_model_with_other_output_rows(tiny):
    model, tokenizer = tiny
    grammars = grammars_for(tokenizer, "leader", "regex", len(tokenizer), [(3, 4)])
    with pytest.raises(ValueError, match="compiled for vocab_size"):
        sample(model, tokenizer, grammars, 0, "leader")


def test_llguidance_prefix_trie_stays_exact_when_it_is_cleared(tiny):
    """The llguidance program caches masks per token prefix; clearing it past max_nodes must
    not change a single mask (checked against the regex backend's DFA)."""
    model, tokenizer = tiny
    vocab_size = model.config.vocab_size
    grammars = grammars_for(tokenizer, "leader", "llguidance", vocab_size)
    for program in {g.program for g in grammars}:
        program.clear()
        program.max_nodes = 5
    others = grammars_for(tokenizer, "leader", "regex", vocab_size)
    try:
        for seed in range(3):  # each start_states clears the grown tries; sampling regrows them
            _, _, out = sample(model, tokenizer, grammars, seed, "leader", return_masks=True)
            assert torch.equal(replay_masks(others, out.tokens, out.lengths), out.masks)
            assert torch.equal(replay_masks(grammars, out.tokens, out.lengths), out.masks)
    finally:
        for program in {g.program for g in grammars}:
            program.max_nodes = 50_000
