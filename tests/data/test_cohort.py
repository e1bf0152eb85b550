import numpy as np
import pandas as pd

from dallebrain.data.cohort import age_norm_z, assign_splits


def _subjects(n, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"subject_id": [f"s{i:03d}" for i in range(n)], "age": rng.uniform(20, 90, n),
                         "sex": rng.choice(["F", "M"], n)})


def test_splits_are_disjoint_balanced_and_deterministic():
    subjects = _subjects(200)
    splits = assign_splits(subjects, seed=1)
    assert set(splits) == set(subjects["subject_id"])
    counts = pd.Series(splits).value_counts()
    assert counts["train"] == 160 and counts["val"] == 20 and counts["test"] == 20
    ages = subjects.set_index("subject_id")["age"].groupby(pd.Series(splits)).mean()
    assert ages.max() - ages.min() < 8  # every split spans the ages
    assert assign_splits(subjects, seed=1) == splits and assign_splits(subjects, seed=2) != splits


def test_small_cohorts_still_get_val_and_test():
    splits = assign_splits(_subjects(4))
    assert sorted(splits.values()) == ["test", "train", "train", "val"]


def test_age_norm_z_flags_outliers_against_the_age_trend():
    subjects = _subjects(60)
    subjects["nwbv"] = 0.85 - 0.002 * (subjects["age"] - 20) + np.random.default_rng(1).normal(0, 0.01, 60)
    subjects.loc[0, "nwbv"] -= 0.05  # much smaller brain than others of that age
    z = age_norm_z(subjects, "nwbv")
    assert z[0] < -3 and abs(z[1:].mean()) < 0.2
    assert age_norm_z(subjects.head(5), "nwbv").isna().all()  # too few to know the norm: say nothing
