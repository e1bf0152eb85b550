"""A model of normal brains at work: anomaly detection against it, and slices with lesions and their masks.

  attributes.py, slices.py   what a slice to examine is (plane, level, contrast) and reading it onto the grid
  normal_model.py, fitting.py  healthy statistics per position, calibrated residuals, thresholds at a stated FPR
  diffusion.py, methods.py   pseudo-healthy reconstruction by partial noising; every method side by side
  maps.py, metrics.py        maps -> slice scores and masks; Dice, AUPRC, AUROC, slice AUROC
  cases.py, paste.py, selection.py, benchmark.py, report.py   the lesion cohort and `evaluate-anomaly`
  detect.py, outputs.py      `dallebrain anomaly`
  lesion_prompts.py, pathology.py   pathology markers in prompts and `dallebrain generate-lesion`
  web.py, cli.py             the web page's Anomaly tab; the commands
"""
