"""`python -m dallebrain.cli ...` is `dallebrain ...`."""

from dallebrain.cli import main

main()
