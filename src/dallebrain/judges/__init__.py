"""Judges that see anatomy in a slice, for the evaluation and on their own (`dallebrain judge`).

  network.py   the tissue segmenter's small U-Net, its config and fp16 safetensors files
  tissue.py    load_tissue_judge(): segment(images), fractions(images) (CSF, ventricles, GM, WM of the brain)
  train.py     `judge train`: fit on a prepared simulated cohort's ground-truth tissue labels
  age.py       load_age_judge().predict(images, orientation, slice_mm): age from the fractions, plane and level
  age_fit.py   `judge fit-age`: its ridge regression, fitted on a prepared data set's train slices
  cli.py       the commands
"""
