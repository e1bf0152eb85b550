"""Cohort readers, one module per layout as downloaded; `base.SubjectRecord` is what each hands to `prepare`.

A reader module has `find_subjects(input_dir, demographics)`; one whose cohort ships its own tissue
segmentation also has `native_volumes(record, reference_img, grid, to_mni, ventricles, max_voxels)`, giving
the measured volumes, None (measure them from intensities) or NOT_NATIVE (labels exist but not in native
space, so no volume is reported).
"""

from __future__ import annotations

import importlib

SOURCES = ("simulated", "bids", "ixi", "oasis1", "hcp")
_MODULES = {"oasis1": "oasis"}
NOT_NATIVE = object()


def reader(source: str):
    """The reader module of a source name."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}: choose from {', '.join(SOURCES)}")
    return importlib.import_module(f"{__name__}.{_MODULES.get(source, source)}")


def native_volumes(record, reference_img, grid, to_mni, ventricles, max_voxels: int):
    """The source's own tissue volumes of a subject (a volumes.TissueVolumes), None or NOT_NATIVE."""
    measure = getattr(reader(record.source), "native_volumes", None)
    return None if measure is None else measure(record, reference_img, grid, to_mni, ventricles, max_voxels)
