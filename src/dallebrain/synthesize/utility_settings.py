"""The training settings and tasks of the utility evaluation (TSTR), shared by the run and its report."""

SETTINGS = ("real", "synthetic", "real+synthetic", "scarce", "scarce+synthetic")
CLASS_TASKS = ("contrast", "orientation", "sex")  # accuracy
REGRESSION_TASKS = ("age", "level_mm")  # mean absolute error (years, mm)
REPORT_FILES = ("utility.json", "utility.md", "utility.png")  # what a run writes in its --out
