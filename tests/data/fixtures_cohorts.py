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


# ---------------------------------------------------------------- template-based heads (registration has work to do)
def rotation(axis: int, degrees: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    i, j = [k for k in range(3) if k != axis]
    out = np.eye(4)
    out[i, i] = out[j, j] = np.cos(angle)
    out[i, j], out[j, i] = -np.sin(angle), np.sin(angle)
    return out


def known_transform(degrees=(8.0, 0.0, -6.0), scale=(1.0, 1.0, 1.0), shift=(6.0, -10.0, 5.0)) -> np.ndarray:
    """A native <- MNI world transform (the `to_mni` a registration should recover)."""
    out = rotation(0, degrees[0]) @ rotation(1, degrees[1]) @ rotation(2, degrees[2]) @ np.diag([*scale, 1.0])
    out[:3, 3] = shift
    return out


@lru_cache(maxsize=4)
def _mni_head(voxel_mm: float, skull: bool) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    from dallebrain.data.templates import template_path

    img = nib.load(template_path("t1"))
    data = np.asarray(img.dataobj, dtype=np.float32)
    pad = 24.0  # mm around the template box: room for the scalp
    lo = img.affine[:3, 3] - pad
    hi = img.affine[:3, 3] + np.asarray(data.shape) - 1 + pad
    shape = tuple(int(n) for n in np.floor((hi - lo) / voxel_mm) + 1)
    affine = np.diag([voxel_mm] * 3 + [1.0])
    affine[:3, 3] = lo
    if voxel_mm > 1.5:
        data = ndimage.gaussian_filter(data, 0.4 * voxel_mm)
    vox = np.linalg.inv(img.affine) @ affine
    head = ndimage.affine_transform(data, vox[:3, :3], vox[:3, 3], output_shape=shape, order=1)
    if skull:
        brain = ndimage.binary_fill_holes(head > 0.3 * head.max())
        depth = ndimage.distance_transform_edt(~brain) * voxel_mm
        # dark CSF rim, dark bone, bright scalp fat: what a T1 of a whole head shows around the brain
        shell = np.select([depth <= 0, depth <= 2, depth <= 7, depth <= 13], [0.0, 30.0, 12.0, 190.0], 0.0)
        head = np.where(brain, head, shell).astype(np.float32)
    return head.astype(np.float32), affine


def mni_head(voxel_mm: float = 3.0, skull: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The MNI152 template T1 (from nilearn's wheel) at `voxel_mm`, optionally wrapped in a fake skull and
    scalp; returns (data, voxel->MNI affine). Real brain anatomy, so registration has something to align."""
    data, affine = _mni_head(float(voxel_mm), bool(skull))
    return data.copy(), affine.copy()


def native_grid(to_mni: np.ndarray, shape=(64, 76, 64), voxel_mm=(3.0, 3.0, 3.0), axes="LAS") -> np.ndarray:
    """voxel -> native world affine of a scanner grid centred on the head that `to_mni` puts in native space."""
    import nibabel.orientations as nio

    ornt = nio.axcodes2ornt(tuple(axes))
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    for voxel_axis, (world_axis, flip) in enumerate(ornt.astype(int)):
        affine[world_axis, voxel_axis] = flip * voxel_mm[voxel_axis]
    centre = (to_mni @ [0.0, -18.0, 9.0, 1.0])[:3]
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return affine


def native_head(to_mni: np.ndarray, shape=(64, 76, 64), affine: np.ndarray | None = None, voxel_mm: float = 3.0,
                skull: bool = True, noise: float = 2.0, bias: float = 0.0, seed: int = 0) -> nib.Nifti1Image:
    """The template head seen by a scanner whose world is `to_mni` (native <- MNI) away from MNI, on `shape`
    voxels (default: LAS, `voxel_mm`), with Rician-like noise and an optional smooth multiplicative bias."""
    from scipy import ndimage

    spacing = voxel_mm if affine is None else float(np.linalg.norm(affine[:3, :3], axis=0).min())
    head, head_affine = mni_head(max(1.0, round(spacing)), skull)
    if affine is None:
        affine = native_grid(to_mni, shape, (voxel_mm,) * 3)
    vox = np.linalg.inv(head_affine) @ np.linalg.inv(to_mni) @ affine
    data = ndimage.affine_transform(head, vox[:3, :3], vox[:3, 3], output_shape=tuple(shape), order=1)
    rng = np.random.default_rng(seed)
    if bias:
        grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
        data = data * np.exp(bias * (grid[0] - grid[1] ** 2 + 0.5 * grid[2]))
    if noise:
        data = np.hypot(data + rng.normal(0, noise, data.shape), rng.normal(0, noise, data.shape))
    return nib.Nifti1Image(data.astype(np.float32), affine)


def t2_like(data: np.ndarray) -> np.ndarray:
    """Invert the brain's contrast (CSF bright, WM dark) as a T2 does; background stays dark."""
    return np.where(data > 20, np.clip(300.0 - data, 20, None), data).astype(np.float32)


IXI_T1_AXES = ("A", "S", "R")  # sagittal slices along the last axis, like the IXI T1 files
IXI_T2_AXES = ("L", "A", "S")  # axial


def write_ixi_heads(root: Path, transforms: dict[str, np.ndarray], shape=(64, 76, 60), voxel_mm=3.0) -> dict:
    """IXI subjects whose T1 is the MNI152 template in a fake skull seen through a known native <- MNI
    transform (stored sagittally); the first subject also gets a T2 and a PD stored axially on another
    grid of the same session. Returns name -> T1 path."""
    paths = {}
    for i, (name, to_mni) in enumerate(transforms.items()):
        t1_shape = tuple(shape[k] for k in (1, 2, 0))
        affine = native_grid(to_mni, t1_shape, (voxel_mm, voxel_mm, voxel_mm), IXI_T1_AXES)
        img = native_head(to_mni, t1_shape, affine, bias=0.15, seed=i)
        paths[name] = root / "IXI-T1" / f"{name}-T1.nii.gz"
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        nib.save(img, paths[name])
        if i == 0:
            t2_affine = native_grid(to_mni, shape, (voxel_mm, voxel_mm, 1.2 * voxel_mm), IXI_T2_AXES)
            head = native_head(to_mni, shape, t2_affine, seed=10).get_fdata(dtype=np.float32)
            (root / "IXI-T2").mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(t2_like(head), t2_affine), root / "IXI-T2" / f"{name}-T2.nii.gz")
            nib.save(nib.Nifti1Image(0.4 * head + 40.0 * (head > 20), t2_affine),
                     root / "IXI-T2" / f"{name}-PD.nii.gz")
    return paths


@lru_cache(maxsize=2)
def _mni_tissue(voxel_mm: float) -> np.ndarray:
    from scipy import ndimage

    from dallebrain.data.templates import template_path

    head, affine = _mni_head(voxel_mm, False)
    maps = []
    for kind in ("gm", "wm"):
        img = nib.load(template_path(kind))
        vox = np.linalg.inv(img.affine) @ affine
        maps.append(ndimage.affine_transform(np.asarray(img.dataobj, np.float32), vox[:3, :3], vox[:3, 3],
                                             output_shape=head.shape, order=1))
    gm, wm = maps
    brain = head > 0.3 * head.max()
    csf = np.where(brain, np.clip(255.0 - gm - wm, 0, None), 0)
    labels = np.argmax(np.stack([np.zeros_like(gm), csf, gm, wm]), axis=0).astype(np.int16)  # 1 CSF, 2 GM, 3 WM
    return np.where(brain, labels, 0).astype(np.int16)


def native_labels(to_mni: np.ndarray, shape, affine: np.ndarray, voxel_mm: float = 3.0) -> np.ndarray:
    """Template tissue classes (0 background, 1 CSF, 2 GM, 3 WM) on a native grid (nearest neighbour)."""
    from scipy import ndimage

    labels = _mni_tissue(float(voxel_mm))
    _, head_affine = _mni_head(float(voxel_mm), False)
    vox = np.linalg.inv(head_affine) @ np.linalg.inv(to_mni) @ affine
    return ndimage.affine_transform(labels, vox[:3, :3], vox[:3, 3], output_shape=tuple(shape), order=0)


def analyze_affine(shape, voxel_mm: float = 3.0) -> np.ndarray:
    """The affine nibabel gives an Analyze image of this shape (centred, LAS): what OASIS users get."""
    header = nib.AnalyzeHeader()
    header.set_data_shape(shape)
    header.set_zooms((voxel_mm,) * 3)
    return header.get_best_affine()
