"""Writers of small fake cohorts in the real download layouts (file names, folders, table headers)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

SHAPE = (40, 48, 40)
VOXEL_MM = 4.0  # 160 x 192 x 160 mm: a head-sized field of view on few voxels


@lru_cache(maxsize=8)
def _head(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    from scipy import ndimage

    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    radius = np.sqrt(((grid / np.array([0.8, 0.85, 0.8])[:, None, None, None]) ** 2).sum(0))
    inner = np.sqrt(((grid / np.array([0.55, 0.6, 0.5])[:, None, None, None]) ** 2).sum(0))
    head = 60.0 * (radius < 1) + 40.0 * (inner < 1)
    rng = np.random.default_rng(seed)
    head = ndimage.gaussian_filter(head, 1.0) + rng.normal(0, 1.0, shape)
    return np.clip(head, 0, None).astype(np.float32)


def head_volume(shape: tuple[int, int, int] = SHAPE, seed: int = 0) -> np.ndarray:
    """A blurred ellipsoid "head" (intensity 60) holding an inner ellipsoid "brain" (100), with mild noise."""
    return _head(tuple(shape), seed).copy()


def head_affine(voxel_mm: float = VOXEL_MM, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = -voxel_mm * (np.asarray(shape) - 1) / 2
    return affine


def write_nifti(path: Path, data: np.ndarray | None = None, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = head_volume() if data is None else data
    nib.save(nib.Nifti1Image(data, head_affine(shape=data.shape[:3]) if affine is None else affine), path)
    return path


def write_analyze(path: Path) -> Path:
    """An Analyze 7.5 pair (path .hdr plus its .img), as OASIS ships them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = head_volume()
    nib.save(nib.AnalyzeImage(data, head_affine()), path)
    return path


# ---------------------------------------------------------------- IXI
IXI_COLUMNS = [
    "IXI_ID",
    "SEX_ID (1=m, 2=f)",
    "HEIGHT",
    "WEIGHT",
    "ETHNIC_ID",
    "MARITAL_ID",
    "OCCUPATION_ID",
    "QUALIFICATION_ID",
    "DOB",
    "DATE_AVAILABLE",
    "STUDY_DATE",
    "AGE",
]


def _ixi_row(number, sex, age, height=170, ethnic=1, dob="1960-01-02"):
    return [
        number,
        sex,
        height,
        70,
        ethnic,
        2,
        1,
        3,
        pd.Timestamp(dob) if dob else None,
        1,
        pd.Timestamp("2005-06-07"),
        age,
    ]


def write_ixi(root: Path, table: str = "xlsx") -> Path:
    """IXI as untarred into two folders, with the IXI.xls quirks.

    Subjects: 002 Guys T1+T2+PD (T2/PD in a second folder), 012 HH T1+T2, 013 IOP T1 (+ MRA, ignored),
    014 imaged without a table row, 015 row without AGE, 016 duplicate rows that agree (the second fuller),
    017 duplicate rows that disagree on sex, 020 MRA only (no usable image); 099 has a row, no image.
    `table` is "xlsx" (Table + code sheets) or "csv" (the Table only); returns the table path.
    """
    t1, t2 = root / "IXI-T1", root / "IXI-T2-PD"
    write_nifti(t1 / "IXI002-Guys-0828-T1.nii.gz")
    write_nifti(t2 / "IXI002-Guys-0828-T2.nii.gz")
    write_nifti(t2 / "IXI002-Guys-0828-PD.nii.gz")
    write_nifti(t1 / "IXI012-HH-1211-T1.nii.gz")
    write_nifti(t2 / "IXI012-HH-1211-T2.nii.gz")
    write_nifti(t1 / "IXI013-IOP-0841-T1.nii.gz")
    write_nifti(root / "IXI-MRA" / "IXI013-IOP-0841-MRA.nii.gz")
    write_nifti(t1 / "IXI014-HH-1236-T1.nii.gz")
    write_nifti(t1 / "IXI015-HH-1258-T1.nii.gz")
    write_nifti(t1 / "IXI016-Guys-0697-T1.nii.gz")
    write_nifti(t1 / "IXI017-Guys-0698-T1.nii.gz")
    write_nifti(root / "IXI-MRA" / "IXI020-Guys-0700-MRA.nii.gz")
    (t1 / "README.txt").write_text("not an image")
    rows = [
        _ixi_row(2, 2, 35.8),
        _ixi_row(12, 1, 38.78),
        _ixi_row(13, 1, 46.71, ethnic=0),
        _ixi_row(15, 2, None),
        _ixi_row(16, 1, 50.2, height=0, dob=None),
        _ixi_row(16, 1, 50.2),
        _ixi_row(17, 1, 60.0),
        _ixi_row(17, 2, 60.0, height=0),
        _ixi_row(99, 2, 70.0),
    ]
    frame = pd.DataFrame(rows, columns=IXI_COLUMNS)
    if table == "csv":
        path = root / "IXI.csv"
        frame.to_csv(path, index=False)
        return path
    path = root / "IXI.xlsx"
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        frame.to_excel(writer, sheet_name="Table", index=False)
        pd.DataFrame({"ID": [1, 2, 3], "ETHNIC": ["White", "Asian", "Black"]}).to_excel(
            writer, sheet_name="Ethnicity", index=False
        )
        pd.DataFrame({"ID": [1, 2], "MARITAL": ["Single", "Married"]}).to_excel(
            writer, sheet_name="Marital Status", index=False
        )
        pd.DataFrame({"ID": [1, 2], "OCCUPATION": ["Go out to full time employment", "Student"]}).to_excel(
            writer, sheet_name="Occupation", index=False
        )
        pd.DataFrame(
            {"ID": [1, 2, 3], "QUALIFICATION": ["No qualifications", "O-levels", "A-levels"]}
        ).to_excel(writer, sheet_name="Qualification", index=False)
    return path


# ---------------------------------------------------------------- OASIS-1
OASIS_COLUMNS = "ID,M/F,Hand,Age,Educ,SES,MMSE,CDR,eTIV,nWBV,ASF,Delay"


def _oasis_session(folder: Path, processed: bool = True, seg: bool = True) -> None:
    name = folder.name
    write_analyze(folder / "RAW" / f"{name}_mpr-1_anon.hdr")
    write_analyze(folder / "RAW" / f"{name}_mpr-2_anon.hdr")
    if processed:
        write_analyze(
            folder / "PROCESSED" / "MPRAGE" / "T88_111" / f"{name}_mpr_n4_anon_111_t88_masked_gfc.hdr"
        )
    if seg:
        write_analyze(folder / "FSL_SEG" / f"{name}_mpr_n4_anon_111_t88_masked_gfc_fseg.hdr")


def write_oasis(root: Path) -> Path:
    """OASIS-1 in disc folders: 0001 (young, CDR blank), 0002 (CDR 0, raw only), 0003 (CDR 1),
    0004 with an MR2 repeat session to skip, 0005 directly in `root` and without a CSV row.
    Returns the CSV path."""
    _oasis_session(root / "disc1" / "OAS1_0001_MR1")
    _oasis_session(root / "disc1" / "OAS1_0002_MR1", processed=False, seg=False)
    _oasis_session(root / "disc1" / "OAS1_0003_MR1")
    _oasis_session(root / "disc2" / "OAS1_0004_MR1")
    _oasis_session(root / "disc2" / "OAS1_0004_MR2")
    _oasis_session(root / "OAS1_0005_MR1")
    lines = [
        OASIS_COLUMNS,
        "OAS1_0001_MR1,F,R,24,,,,,1344,0.843,1.306,",
        "OAS1_0002_MR1,M,R,55,4,1,29,0,1147,0.81,1.531,",
        "OAS1_0003_MR1,F,R,73,4,3,27,1,1454,0.708,1.207,",
        "OAS1_0004_MR1,M,R,28,,,,,1588,0.803,1.105,",
        "OAS1_0004_MR2,M,R,28,,,,,1590,0.802,1.104,11",
    ]
    path = root / "oasis_cross-sectional.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------- HCP
def write_hcp(root: Path) -> Path:
    """HCP structural packages: 100307 MNI T1+T2 (+ both aparc+aseg), 100408 native T1 only,
    101915 aged "36+", 102311 with no T1 at all, 103111 without a CSV row. Returns the CSV path."""
    mni = (
        "MNINonLinear/T1w_restore_brain.nii.gz",
        "MNINonLinear/T2w_restore_brain.nii.gz",
        "MNINonLinear/aparc+aseg.nii.gz",
        "T1w/T1w_acpc_dc_restore_brain.nii.gz",
        "T1w/aparc+aseg.nii.gz",
    )
    native = ("T1w/T1w_acpc_dc_restore_brain.nii.gz", "T1w/aparc+aseg.nii.gz")
    layout = {
        "100307": mni,
        "100408": native,
        "101915": native,
        "102311": ("MNINonLinear/wmparc.nii.gz",),
        "103111": native,
    }
    for subject, files in layout.items():
        for name in files:
            write_nifti(root / subject / name)
    path = root / "unrestricted_someone_1_2_2024_1_2_3.csv"
    path.write_text(
        "Subject,Release,Acquisition,Gender,Age\n"
        "100307,Q1,Q01,F,26-30\n100408,Q3,Q03,M,31-35\n101915,S500,Q04,F,36+\n102311,S900,Q05,F,22-25\n"
    )
    return path


# ---------------------------------------------------------------- BIDS
def write_bids(root: Path) -> Path:
    """BIDS: 01 T1w+FLAIR, 02 two sessions (T1w+T2w in ses-1), 03 sex coded "1" (refused), 04 without a
    participants row, 05 with an empty anat folder. Returns participants.tsv."""
    write_nifti(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    write_nifti(root / "sub-01" / "anat" / "sub-01_FLAIR.nii")
    (root / "sub-01" / "anat" / "sub-01_T1w.json").write_text(
        '{"MagneticFieldStrength": 3, "Manufacturer": "Siemens"}'
    )
    for session in ("ses-1", "ses-2"):
        write_nifti(root / "sub-02" / session / "anat" / f"sub-02_{session}_T1w.nii.gz")
        write_nifti(root / "sub-02" / session / "anat" / f"sub-02_{session}_run-1_T2w.nii.gz")
    write_nifti(root / "sub-03" / "anat" / "sub-03_acq-mprage_T1w.nii.gz")
    write_nifti(root / "sub-04" / "anat" / "sub-04_T1w.nii.gz")
    (root / "sub-05" / "anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "fixture", "BIDSVersion": "1.8.0"}')
    path = root / "participants.tsv"
    path.write_text(
        "participant_id\tAge\tSex\tfield_strength\thandedness\n"
        "sub-01\t23\tfemale\tn/a\tright\n"
        "sub-02\t41.5\tM\t1.5\tleft\n"
        "sub-03\t30\t1\t3\tn/a\n"
        "sub-05\tn/a\tF\tn/a\tright\n"
    )
    return path
