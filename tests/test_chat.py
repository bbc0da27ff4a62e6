"""Chat-template rendering of text-game prompts."""

from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from textgame.text_env import TextStackelbergEnv
from trainers.policy.chat import chat_render

TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}")
NO_SYSTEM = (
    "{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('system role not supported') }}{% endif %}"
    "[{{ m['role'] }}]{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}[bot]{% endif %}")


def tokenizer(template=None) -> PreTrainedTokenizerFast:
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")),
        unk_token="<unk>")
    tok.chat_template = template
    return tok


def test_no_template_means_plain_prompts():
    assert chat_render(tokenizer()) is None


def test_system_and_user_turns_end_with_the_generation_prompt():
    render = chat_render(tokenizer(TEMPLATE))
    assert render("meta", "obs") == "<|system|>meta<|end|><|user|>obs<|end|><|assistant|>"


def test_templates_without_a_system_role_get_it_in_the_user_turn():
    render = chat_render(tokenizer(NO_SYSTEM))
    assert render("meta", "obs") == "[user]meta\nobs[bot]"


def test_text_env_prompts_use_the_chat_template():
    env = TextStackelbergEnv(n_envs=2, render=chat_render(tokenizer(TEMPLATE)))
    prompts = env.reset(seed=0)
    assert all(p.startswith("<|system|>You are the base station") for p in prompts)
    assert all(p.endswith("DCM:<|end|><|assistant|>") for p in prompts)
