"""Issue 16, data side: reproducible registration, size limits read from image headers, what a killed
`prepare` leaves behind, and demographics tables with damaged rows or other encodings."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from nibabel.arrayproxy import ArrayProxy

from dallebrain.data import registration as reg
from dallebrain.data import volume_io
from dallebrain.data.io import atomic_path
from dallebrain.data.prepare import PrepareOptions, prepare
from dallebrain.data.sources import bids, tables

SHAPE, VOXEL_MM = (40, 48, 40), 4.0  # 160 x 192 x 160 mm: a head's field of view on few voxels


def _affine(shape=SHAPE, voxel_mm=VOXEL_MM) -> np.ndarray:
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = -voxel_mm * (np.asarray(shape) - 1) / 2
    return affine


def _head() -> nib.Nifti1Image:
    """A noisy ellipsoid 'head' with a 'brain' and an off-centre blob, so no rotation maps it onto itself."""
    from scipy import ndimage

    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij"))
    radius = np.sqrt(((grid / np.array([0.8, 0.85, 0.8])[:, None, None, None]) ** 2).sum(0))
    inner = np.sqrt(((grid / np.array([0.55, 0.6, 0.5])[:, None, None, None]) ** 2).sum(0))
    blob = np.sqrt(((grid - np.array([0.3, 0.2, -0.2])[:, None, None, None]) ** 2).sum(0))
    head = 60.0 * (radius < 1) + 40.0 * (inner < 1) + 50.0 * (blob < 0.2)
    head = ndimage.gaussian_filter(head, 1.0) + np.random.default_rng(0).normal(0, 1.0, SHAPE)
    return nib.Nifti1Image(np.clip(head, 0, None).astype(np.float32), _affine())


@pytest.fixture
def itk_threads():
    """Set ITK's process default thread count inside a test; the old value comes back afterwards."""
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    yield sitk.ProcessObject.SetGlobalDefaultNumberOfThreads
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


# ------------------------------------------------------------------ item 4: reproducible registration
def test_registering_the_same_image_twice_gives_the_same_transform_bit_for_bit(itk_threads):
    fixed = _head()
    truth = np.eye(4)
    truth[:3, :3] = np.diag([1.05, 0.95, 1.0])
    truth[:3, 3] = [6.0, -8.0, 4.0]
    moving = nib.Nifti1Image(reg.resample_to(fixed, np.linalg.inv(truth), SHAPE, fixed.affine), fixed.affine)
    settings = {"shrink_factors": (2, 1), "smoothing_mm": (2.0, 1.0), "max_samples": 2000, "iterations": 40,
                "min_step": 0.01}
    found = []
    for threads in (2, 2, 1):  # prepare gives each worker the cores divided by the workers
        itk_threads(threads)
        found.append(reg.register_affine(moving, fixed, **settings))
    assert np.abs(found[0] - truth).max() < 5.0  # it did register, not stop at the start
    for other in found[1:]:
        np.testing.assert_array_equal(other, found[0])


def test_registration_refuses_seed_zero_which_itk_reads_as_the_clock():
    image = _head()
    with pytest.raises(ValueError, match="seed must be between 1 and"):
        reg.register_affine(image, image, seed=0)


def test_n4_bias_field_is_the_same_whatever_the_thread_count(itk_threads):
    image = _head()
    fields = []
    for threads in (1, 2):
        itk_threads(threads)
        fields.append(reg.n4_log_bias(image, None, 2, (20, 20), 1e-3))
    np.testing.assert_array_equal(fields[0], fields[1])


# ------------------------------------------------------------------ item 5: size limits from the header
@pytest.fixture
def voxels_read(monkeypatch) -> list:
    """Records (and forbids) every read of voxel data through nibabel's lazy array proxy."""
    reads = []

    def refuse(self, *args, **kwargs):
        reads.append(self.file_like)
        raise AssertionError("voxel data read")

    monkeypatch.setattr(ArrayProxy, "_get_unscaled", refuse)
    return reads


def _huge_header(klass):
    header = klass()
    header.set_data_dtype(np.float32)
    header.set_data_shape((1200, 1200, 1200))  # 6.4 GiB as float32
    header.set_zooms((0.25, 0.25, 0.25))  # 300 mm: passes the field-of-view check
    return header


def test_nifti_header_claiming_1200_cubed_is_refused_before_its_voxels_are_read(tmp_path, voxels_read):
    header = _huge_header(nib.Nifti1Header)
    header.set_qform(np.diag([0.25, 0.25, 0.25, 1.0]), code=1)
    path = tmp_path / "bomb.nii.gz"
    # The header, then 1 MB of zeros where 6.4 GiB should follow: a small file that claims a huge volume.
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + bytes(2**20)))
    assert path.stat().st_size < 10_000
    with pytest.raises(volume_io.VolumeError) as refused:
        volume_io.load_volume(path)
    message = str(refused.value)
    assert message.startswith("bomb.nii.gz: 1200 x 1200 x 1200 = 1,728,000,000 voxels exceed the limit")
    assert "\n" not in message
    assert voxels_read == []


def test_analyze_header_claiming_1200_cubed_is_refused_before_its_voxels_are_read(tmp_path, voxels_read):
    path = tmp_path / "OAS1_0001_MR1_mpr-1_anon.hdr"
    path.write_bytes(_huge_header(nib.AnalyzeHeader).binaryblock)
    path.with_suffix(".img").write_bytes(bytes(1000))
    with pytest.raises(volume_io.VolumeError, match="1200 x 1200 x 1200 = 1,728,000,000 voxels exceed the limit"):
        volume_io.load_volume(path)
    assert voxels_read == []


def test_voxel_limit_is_a_setting_and_axes_have_their_own(tmp_path):
    path = tmp_path / "head.nii.gz"
    nib.save(_head(), path)
    assert volume_io.load_volume(path).shape == SHAPE  # 76800 voxels: under the default
    with pytest.raises(volume_io.VolumeError, match="40 x 48 x 40 = 76,800 voxels exceed the limit of 70,000"):
        volume_io.load_volume(path, max_voxels=70_000)
    long_axis = tmp_path / "long.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((2000, 32, 32), np.float32), np.diag([0.15, 4.0, 4.0, 1.0])), long_axis)
    with pytest.raises(volume_io.VolumeError, match=f"more than {volume_io.MAX_VOXELS_PER_AXIS} along an axis"):
        volume_io.load_volume(long_axis)


def test_nifti_with_a_gzip_bomb_in_its_header_extensions_is_refused_before_opening(tmp_path, monkeypatch):
    """nibabel reads every extension (all bytes before vox_offset) into memory when it opens a file."""
    monkeypatch.setattr(volume_io, "MAX_HEADER_BYTES", 2**20)  # so the test's bomb can stay small
    header = nib.Nifti1Header()
    header.set_data_shape(SHAPE)
    header.set_data_dtype(np.float32)
    extension = 2 * 2**20
    header["vox_offset"] = 352 + extension
    esize_ecode = np.array([extension, 0], dtype="<i4").tobytes()
    path = tmp_path / "extended.nii.gz"
    body = header.binaryblock + b"\1\0\0\0" + esize_ecode + bytes(extension - 8) + bytes(4 * int(np.prod(SHAPE)))
    path.write_bytes(gzip.compress(body, compresslevel=1))
    opened = []
    monkeypatch.setattr(nib, "load", lambda *args, **kwargs: opened.append(args))
    with pytest.raises(volume_io.VolumeError, match="extended.nii.gz: header extensions of 2 MiB"):
        volume_io.load_volume(path)
    assert opened == []


# ------------------------------------------------------------------ item 9: what a killed prepare leaves
def test_rerun_removes_stale_temp_files_and_unreferenced_slices_only(tiny_cohort, tiny_prepared, tmp_path):
    out = tmp_path / "prepared"
    shutil.copytree(tiny_prepared, out)
    table = pd.read_parquet(out / "metadata.parquet")
    kept_slice = out / table["image_path"].iloc[0]
    subject_dir = kept_slice.parent
    # A kill -9 inside data.io.atomic_path leaves its temporary file: make one with the name it gives.
    with atomic_path(subject_dir / kept_slice.name) as tmp:
        tmp.write_bytes(kept_slice.read_bytes())
        stale = [tmp]
    stale[0].write_bytes(b"")
    stale.append(out / "subjects" / f".tmp-0123abcd-{table['subject_id'].iloc[0]}.parquet")
    stale.append(out / ".tmp-89abcdef-metadata.parquet")
    for path in stale[1:]:
        path.write_bytes(b"")
    # Slices of a killed subject that its rerun no longer cuts, and of a subject gone from the cohort.
    orphans = [subject_dir / kept_slice.name.replace(kept_slice.name.split("_")[-1], "+999.9mm.png"),
               out / "slices" / "simulated-999" / "simulated-999_T1w_axial_+000.0mm.png"]
    for path in orphans:
        path.parent.mkdir(exist_ok=True)
        shutil.copy(kept_slice, path)
    # Not prepare's: kept.
    users = [subject_dir / "notes.txt", subject_dir / "my_drawing.png", out / ".tmp-notes.txt",
             tmp_path / "elsewhere" / ".tmp-0123abcd-x.png"]
    for path in users:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"mine")

    prepare(PrepareOptions("simulated", tiny_cohort, out, size=64, slice_step_mm=6.0), progress=False)

    assert [p for p in stale + orphans if p.exists()] == []
    assert not (out / "slices" / "simulated-999").exists()
    assert all(p.read_bytes() == b"mine" for p in users)
    after = pd.read_parquet(out / "metadata.parquet")
    assert len(after) == len(table) and all((out / p).is_file() for p in after["image_path"])
    on_disk = {p.relative_to(out).as_posix() for p in (out / "slices").rglob("*.png")}
    labels = set(after["label_path"].dropna())  # the tissue label slices beside the images are prepare's too
    assert labels and all((out / p).is_file() for p in labels)
    assert on_disk == set(after["image_path"]) | labels | {(subject_dir / "my_drawing.png").relative_to(out).as_posix()}


# ------------------------------------------------------------------ item 10: demographics tables
PARTICIPANTS = ("participant_id\tage\tsex\tsite\n"
                "sub-01\t23\tF\tZürich\n"
                "sub-02\t41\tM\tGenève\n"
                "sub-03\t30\tF\tBern\n")


def _bids(root, participants: bytes):
    for sid in ("01", "02", "03"):
        anat = root / f"sub-{sid}" / "anat"
        anat.mkdir(parents=True)
        (anat / f"sub-{sid}_T1w.nii.gz").write_bytes(b"")  # the reader only lists images
    (root / "participants.tsv").write_bytes(participants)
    return root


def _by_id(root):
    return {r.subject_id: r for r in bids.find_subjects(root)}


def test_one_bad_byte_fails_its_subject_only(tmp_path):
    damaged = PARTICIPANTS.encode().replace(b"Bern", b"B\xffern")
    records = _by_id(_bids(tmp_path, damaged))
    assert records["03"].problems == ["demographics line 4 has bytes that are not utf-8 text"]
    assert [(r.age, r.sex, r.extra["site"], r.problems) for r in (records["01"], records["02"])] == [
        (23.0, "F", "Zürich", []), (41.0, "M", "Genève", [])]


def test_a_row_with_too_many_cells_fails_its_subject_only(tmp_path):
    text = PARTICIPANTS.replace("sub-02\t41\tM\tGenève", "sub-02\t41\tM\tGenève\tleft\t3T")
    text = text.replace("Zürich\n", "Zürich\t\t\n")  # empty trailing cells say nothing: no problem
    records = _by_id(_bids(tmp_path, text.encode()))
    assert records["02"].problems == ["demographics line 3 has 6 cells for 4 columns"]
    assert [(r.age, r.extra["site"], r.problems) for r in (records["01"], records["03"])] == [
        (23.0, "Zürich", []), (30.0, "Bern", [])]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be-bom", "latin-1"])
def test_participants_in_other_encodings_are_read(tmp_path, encoding):
    raw = (b"\xfe\xff" + PARTICIPANTS.encode("utf-16-be") if encoding == "utf-16-be-bom"
           else PARTICIPANTS.encode(encoding))
    records = _by_id(_bids(tmp_path, raw))
    assert [(r.age, r.sex, r.extra["site"], r.problems) for r in records.values()] == [
        (23.0, "F", "Zürich", []), (41.0, "M", "Genève", []), (30.0, "F", "Bern", [])]


def test_utf8_bom_in_a_semicolon_csv_and_a_json_sidecar(tmp_path):
    """Excel's "CSV UTF-8" in a ";" locale, and a sidecar saved by a Windows editor: both start with a BOM."""
    csv = tmp_path / "oasis.csv"
    csv.write_bytes("\ufeffID;M/F;Age;Hand\nOAS1_0001_MR1;F;24;R\n".encode())
    table = tables.read_table(csv)
    assert list(table.columns) == ["ID", "M/F", "Age", "Hand"] and table["Age"].tolist() == [24]
    root = _bids(tmp_path / "bids", PARTICIPANTS.encode())
    (root / "T1w.json").write_bytes('\ufeff{"MagneticFieldStrength": 3}'.encode())
    assert {r.field_strength for r in bids.find_subjects(root)} == {3.0}


def test_utf16_without_byte_order_mark_is_refused_in_one_line(tmp_path):
    _bids(tmp_path, PARTICIPANTS.encode("utf-16-le"))
    with pytest.raises(ValueError, match="cannot read BIDS participants file .*: looks like UTF-16 without a "
                                         "byte-order mark: save it as UTF-8$"):
        bids.find_subjects(tmp_path)


def test_bad_demographics_row_goes_to_failures_csv_while_others_are_prepared(tmp_path):
    """The damaged row's subject is listed with its reason; the other subjects are attempted (here they fail
    on their empty image files, which is enough to show the cohort was not stopped)."""
    root = _bids(tmp_path / "bids", PARTICIPANTS.encode().replace(b"Bern", b"B\xffern"))
    out = tmp_path / "prepared"
    with pytest.raises(RuntimeError, match="no subject could be prepared"):
        prepare(PrepareOptions("bids", root, out), progress=False)
    failures = pd.read_csv(out / "failures.csv", dtype=str).set_index("subject_id")["reason"]
    assert failures.loc["03"] == "ValueError: demographics line 4 has bytes that are not utf-8 text"
    assert "unreadable" in failures.loc["01"] and "unreadable" in failures.loc["02"]


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dallebrain.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_prepare_max_voxels_option_checked_and_passed_to_every_image(tiny_cohort, tmp_path):
    bad = _cli("data", "prepare", "--source", "simulated", "--input", str(tiny_cohort), "--out", "x",
               "--max-voxels", "1000", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"error: --max-voxels must be at least {volume_io.MIN_VOXELS**3} (the smallest head volume), got 1000"]
    assert not (tmp_path / "x").exists()
    out = tmp_path / "prepared"
    small = _cli("data", "prepare", "--source", "simulated", "--input", str(tiny_cohort), "--out", str(out),
                 "--max-voxels", str(volume_io.MIN_VOXELS**3), "--workers", "1")
    assert small.returncode == 2 and "no subject could be prepared" in small.stderr
    reasons = pd.read_csv(out / "failures.csv")["reason"]
    assert len(reasons) == 4 and reasons.str.contains(f"voxels exceed the limit of {volume_io.MIN_VOXELS**3:,}").all()
