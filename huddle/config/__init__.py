"""Configuration: settings and model profiles (`settings`) read from YAML with line-aware errors (`yamlfile`)."""
