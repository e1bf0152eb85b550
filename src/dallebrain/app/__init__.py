"""`dallebrain serve`: a web page (gradio) for generating slices, unCLIP variations and a blinded reader study.

handlers.py (plain functions the page calls), study.py (the reader study in SQLite), ui.py (the page),
cli.py (the command). Needs the `web` extra: pip install 'dallebrain[web]'.
"""
