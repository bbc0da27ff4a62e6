"""Prompt encoding: the line cache gives exactly the ids of encoding each prompt in full."""

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from textgame.config import CellConfig, ScenarioConfig
from textgame.prompts import TextConfig
from textgame.text_env import TextStackelbergEnv
from trainers.policy.encoding import PromptEncoder, encode_prompts
from trainers.policy.named_models import build_tiny_model, game_corpus


@pytest.fixture(scope="module", params=[True, False], ids=["split-digits", "merged-digits"])
def tokenizer(request, tmp_path_factory):
    cache = tmp_path_factory.mktemp(f"tiny-{request.param}")
    return build_tiny_model(cache, split_digits=request.param)[1]


def game_prompts(ttis: int = 4):
    """Leader and follower prompts of a few TTIs, with history so lines vary."""
    env = TextStackelbergEnv(ScenarioConfig(cell=CellConfig(ue_counts=(2, 7))), n_envs=6,
                             config=TextConfig(history_ttis=2))
    prompts = env.reset(seed=1)
    batches = []
    for _ in range(ttis):
        batches.append(prompts)
        followers = env.step_leader(["1 2 0 1"] * 6)
        batches.append(followers)
        prompts = env.step_followers(["1010 1"] * len(followers)).leader_prompts
    return batches


def test_line_cache_gives_the_ids_of_full_encoding(tokenizer):
    encoder = PromptEncoder(tokenizer, verify=0)  # trust the cache: compare every batch here
    for prompts in game_prompts():
        ids, mask = encoder(prompts)
        expected_ids, expected_mask = encode_prompts(tokenizer, prompts)
        assert ids.tolist() == expected_ids.tolist()
        assert mask.tolist() == expected_mask.tolist()
    assert encoder.line_cache


def test_cache_is_cleared_past_its_cap_and_stays_exact(tokenizer):
    encoder = PromptEncoder(tokenizer, verify=0, max_lines=10)
    for prompts in game_prompts(2):
        assert encoder(prompts)[0].tolist() == encode_prompts(tokenizer, prompts)[0].tolist()
        assert len(encoder._lines) <= max(10, len({x for p in prompts for x in p.splitlines()}))


def metaspace_tokenizer() -> PreTrainedTokenizerFast:
    """A SentencePiece-style tokenizer: every encoded text starts with a word marker, so a
    prompt's ids are not its lines' ids put together."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
    tok.decoder = decoders.Metaspace(prepend_scheme="always")
    tok.train_from_iterator(game_corpus(ttis=1), trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<unk>", "<eos>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   eos_token="<eos>")


def test_tokenizers_whose_lines_do_not_concatenate_fall_back_to_full_encoding():
    tokenizer = metaspace_tokenizer()
    prompts = game_prompts(1)[0]
    lines = [tokenizer(x, add_special_tokens=False)["input_ids"]
             for x in prompts[0].splitlines(keepends=True)]
    assert sum(lines, []) != tokenizer(prompts[0])["input_ids"]  # the premise of the fallback
    encoder = PromptEncoder(tokenizer)
    ids, _ = encoder(prompts)
    assert not encoder.line_cache
    assert ids.tolist() == encode_prompts(tokenizer, prompts)[0].tolist()


def test_a_single_string_is_rejected(tokenizer):
    with pytest.raises(ValueError, match="single str"):
        PromptEncoder(tokenizer)("DCM:")
