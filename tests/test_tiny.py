"""The tiny offline model (design §7): deterministic, cached on disk, game-trained tokenizers."""

import re

import pytest
import torch

from trainers.policy import named_models as tiny_module
from trainers.policy.named_models import build_named_model, build_tiny_model, game_corpus


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def split(tiny_cache):
    return build_tiny_model(tiny_cache, split_digits=True)


@pytest.fixture(scope="session")
def merged(tiny_cache):
    return build_tiny_model(tiny_cache, split_digits=False)


def words(tokenizer, text):
    return tokenizer.convert_ids_to_tokens(tokenizer.encode(text, add_special_tokens=False))


def test_build_is_deterministic_for_a_seed(split, tmp_path):
    model, tokenizer = split
    again_model, again_tokenizer = build_tiny_model(tmp_path, split_digits=True)
    assert again_tokenizer.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()
    state, again = model.state_dict(), again_model.state_dict()
    assert state.keys() == again.keys()
    assert all(torch.equal(state[k], again[k]) for k in state)


def test_other_seeds_give_other_weights(split, tmp_path):
    other, _ = build_tiny_model(tmp_path, split_digits=True, seed=1)
    name = "model.embed_tokens.weight"
    assert not torch.equal(other.state_dict()[name], split[0].state_dict()[name])


def test_later_calls_load_from_the_cache_dir(split, tiny_cache, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("the cached model should have been loaded")

    monkeypatch.setattr(tiny_module, "train_tokenizer", no_training)
    model, tokenizer = build_tiny_model(tiny_cache, split_digits=True)
    assert tokenizer.name_or_path == split[1].name_or_path
    assert str(tiny_cache) in tokenizer.name_or_path
    assert torch.equal(model.lm_head.weight, split[0].lm_head.weight)


def test_split_digits_tokenizer_has_one_token_per_digit(split):
    _, tokenizer = split
    assert words(tokenizer, "10 11 12") == ["1", "0", "Ġ", "1", "1", "Ġ", "1", "2"]
    assert words(tokenizer, "1010 2") == ["1", "0", "1", "0", "Ġ", "2"]


def test_merged_digits_tokenizer_has_multi_digit_tokens(merged):
    _, tokenizer = merged
    assert words(tokenizer, "10 11 12") == ["10", "Ġ11", "Ġ12"]
    multi = [t for t in tokenizer.get_vocab() if re.fullmatch(r"Ġ?[01]{3,}", t)]
    assert len(multi) > 10  # bitmap pieces


@pytest.mark.parametrize("which", ["split", "merged"])
def test_tokenizer_has_special_tokens_and_prepends_bos(which, request):
    model, tokenizer = request.getfixturevalue(which)
    assert [tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token] == [
        "<bos>", "<eos>", "<pad>", "<unk>"]
    assert tokenizer.encode("DCM:")[0] == tokenizer.bos_token_id
    assert tokenizer.decode(tokenizer.encode("DCM:3 0 12 1", add_special_tokens=False)) == (
        "DCM:3 0 12 1")
    assert model.config.eos_token_id == tokenizer.eos_token_id


@pytest.mark.parametrize("which", ["split", "merged"])
def test_model_is_a_small_llama_with_padding_rows(which, request):
    model, tokenizer = request.getfixturevalue(which)
    config = model.config
    assert config.model_type == "llama" and not model.training
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 2, 4)
    assert config.vocab_size % 64 == 0 and config.vocab_size > len(tokenizer)
    assert model.lm_head.weight.shape[0] == config.vocab_size


def test_corpus_holds_prompts_and_actions_for_i_up_to_12():
    texts = game_corpus(0, ttis=1)
    assert any(t.startswith("You are the base station") and "12 UEs" in t for t in texts)
    assert any(re.search(r"\nDCM:(\d+ )*1[0-2]( \d+)*$", t) for t in texts)
    assert any(re.search(r"\nAction:[01]+ \d$", t) for t in texts)
    assert game_corpus(0, ttis=1) == texts


@pytest.mark.parametrize("kwargs, message", [
    ({"hidden_size": 66}, "hidden_size = 66 is invalid; allowed: a multiple of heads = 4"),
    ({"layers": 0}, "layers = 0 is invalid; allowed: an integer >= 1"),
    ({"vocab_size": 100}, "vocab_size = 100 is invalid; allowed: an integer >= 300")])
def test_invalid_sizes_raise(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_tiny_model(tmp_path, **kwargs)


def test_vanilla_transformer_is_the_papers_size(tmp_path):
    """App. B-F / Table IX: a 6.4M-parameter causal LM with 8 heads, trained from scratch."""
    model, tokenizer = build_named_model("vanilla", tmp_path)
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (
        256, 6, 8)
    assert 6.0e6 < sum(p.numel() for p in model.parameters()) < 7.0e6
    assert tokenizer.name_or_path == str(tmp_path / next(tmp_path.iterdir()).name)
    with pytest.raises(ValueError, match="random model 'gpt5' is unknown; allowed: "
                                         r"\['tiny', 'vanilla'\]"):
        build_named_model("gpt5", tmp_path)
