"""Test support code: builders of tiny real models and checkpoint files (no downloads)."""
