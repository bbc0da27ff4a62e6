"""Recipes: thin scripts over the ``agentic-mac`` commands and their YAML configs (``configs/``)."""
