"""The policy model: one base LM with a LoRA adapter and a value head per role, its prompts
(:mod:`~trainers.policy.encoding`, :mod:`~trainers.policy.chat`), the meta-prompt KV cache
(:mod:`~trainers.policy.prefix_cache`) and the offline named models
(:mod:`~trainers.policy.named_models`)."""
