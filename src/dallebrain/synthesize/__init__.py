"""Synthetic data sets at scale (`dallebrain synthesize`) and the measure of their use for training
(`dallebrain evaluate-utility`: train on synthetic, test on real).

mix.py (attribute options) -> plan.py (slice i's attributes, caption, seed, split) -> generate.py (batches across
prompts, resumable part files) -> merge.py (metadata.parquet, card.py) ; run.py ties them together and shards
over `accelerate launch` processes; judge.py is the on-prompt filter; utility.py the train-on-synthetic test.
"""
