"""Ageing sequences: the same brain at other ages. network.py (the ageing network), pairs.py (session pairs of
a prepared longitudinal data set), predict.py (a slice at other ages), sequence.py (`dallebrain age`: outputs,
strip, GIF, tissue fractions), evaluate.py (`dallebrain evaluate-ageing`: against the simulated follow-ups)."""
