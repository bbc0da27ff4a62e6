"""Chat-template rendering of text-game prompts (design §4): a ``render`` for TextStackelbergEnv."""

from __future__ import annotations

from collections.abc import Callable

from jinja2.exceptions import TemplateError


def chat_render(tokenizer) -> Callable[[str, str], str] | None:
    """``render(system, user)`` through ``tokenizer.apply_chat_template``; None without a template.

    The meta-prompt goes in a system turn, the observation in a user turn, and the generation
    prompt is appended so the action follows directly. Templates that refuse a system role get
    the meta-prompt prepended to the user turn instead.
    """
    if not getattr(tokenizer, "chat_template", None):
        return None

    def render(system: str, user: str) -> str:
        try:
            messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
            return tokenizer.apply_chat_template(messages, tokenize=False,
                                                 add_generation_prompt=True)
        except TemplateError:
            messages = [{"role": "user", "content": f"{system}\n{user}"}]
            return tokenizer.apply_chat_template(messages, tokenize=False,
                                                 add_generation_prompt=True)

    return render
