"""The shop's prompt templates, named ``support_shop.prompts:<name>`` in team YAML and code (huddle's rules)."""
