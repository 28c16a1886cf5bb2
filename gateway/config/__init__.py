"""Configuration: the typed model (`model`) and the YAML loader (`load`)."""
