"""Small helpers with no knowledge of detection: atomic writes, quiet native logs, model-file checks."""
