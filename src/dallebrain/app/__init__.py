"""`dallebrain serve`: a web page (gradio) for generating slices, unCLIP variations and a blinded reader study.

handlers.py (plain functions the page calls), study.py (the reader study in SQLite), ui.py (the page),
cli.py (the command), untrusted.py (browser input as text, inert CSV cells, LoRA names confined to --lora-dir).
Needs the `web` extra: pip install 'dallebrain[web]'. What the server exposes: README, "Threat model".
"""
