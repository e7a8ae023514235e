"""Model layer: registry, built-in offline models and litellm-backed calls."""
