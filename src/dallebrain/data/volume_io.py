"""Reading a head volume from disk, safely: NIfTI or Analyze, checked from its header (size limits, geometry)
before a voxel is decompressed, then for content, and reoriented to RAS+."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

MIN_EXTENT_MM, MAX_EXTENT_MM, MIN_VOXELS = 100.0, 400.0, 32
# Size limits read from the header, so a small crafted (or gzip-bomb) file is refused before its voxels are
# decompressed. 512^3 voxels is 512 MiB as float32 (prepare holds a few copies per worker): above any
# in-vivo head scan we prepare (1 mm: 256^3 = 17 M; HCP 0.7 mm: 21 M; 7 T 0.5 mm: ~80 M voxels).
# 1024 per axis is 0.25 mm over 256 mm. Larger scans pass with a larger `max_voxels` (`--max-voxels`).
MAX_VOXELS = 512**3
MAX_VOXELS_PER_AXIS = 1024
# nibabel reads NIfTI header extensions (everything before vox_offset) into memory on open: a real file has
# at most a few hundred kB there.
MAX_HEADER_BYTES = 64 * 2**20


class VolumeError(ValueError):
    """An image file that cannot serve as a head MRI volume; the message is one line naming the file."""


def load_volume(path: Path | str, max_voxels: int = MAX_VOXELS) -> nib.Nifti1Image:
    """Read a NIfTI (.nii, .nii.gz) or Analyze (.hdr/.img) head volume, checked and reoriented to RAS+.

    Returns a Nifti1Image with float32 data in memory. Raises VolumeError for an unreadable or truncated
    file, more than one volume, NaN/inf values, constant data, a field of view that is not a head
    (fewer than 32 voxels, or an extent outside 100-400 mm, along any axis), or a size over the limits
    (`max_voxels` in all, MAX_VOXELS_PER_AXIS along an axis, MAX_HEADER_BYTES of header extensions),
    which are checked from the header before any voxel is read.
    """
    path = Path(path)
    name = path.name
    if max_voxels < 1:
        raise ValueError(f"max_voxels must be positive, got {max_voxels}")

    def unreadable(exc: Exception) -> VolumeError:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return VolumeError(f"{name}: unreadable or truncated file ({reason})")

    try:
        extensions = _nifti_extension_bytes(path)
        if extensions > MAX_HEADER_BYTES:
            raise VolumeError(f"{name}: header extensions of {extensions / 2**20:.0f} MiB "
                              f"(more than {MAX_HEADER_BYTES // 2**20} MiB): not an MRI volume")
        img = nib.load(str(path))
        affine = np.asarray(img.affine, dtype=float)
    except VolumeError:
        raise
    except Exception as exc:  # noqa: BLE001 - nibabel, gzip and zlib each raise their own kind
        raise unreadable(exc) from exc
    # Geometry comes from the header: a DTI series or a localiser is refused before its voxels are read.
    shape = tuple(img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise VolumeError(f"{name}: expected one 3-D volume, got shape {tuple(img.shape)}")
    size = " x ".join(map(str, shape))
    voxels = int(np.prod(shape, dtype=object))  # Python ints: never overflows, whatever the header claims
    if voxels > max_voxels:
        raise VolumeError(f"{name}: {size} = {voxels:,} voxels exceed the limit of {max_voxels:,} "
                          "(max_voxels; raise it for larger scans)")
    if max(shape) > MAX_VOXELS_PER_AXIS:
        raise VolumeError(f"{name}: {size} voxels: more than {MAX_VOXELS_PER_AXIS} along an axis")
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise VolumeError(f"{name}: invalid affine (singular or not finite)")
    extent = np.asarray(shape) * np.linalg.norm(affine[:3, :3], axis=0)
    if min(shape) < MIN_VOXELS or extent.min() < MIN_EXTENT_MM or extent.max() > MAX_EXTENT_MM:
        raise VolumeError(
            f"{name}: field of view {' x '.join(f'{e:.0f}' for e in extent)} mm on "
            f"{' x '.join(map(str, shape))} voxels is not a head "
            f"(need >= {MIN_VOXELS} voxels and {MIN_EXTENT_MM:.0f}-{MAX_EXTENT_MM:.0f} mm per axis)"
        )
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape)
    except Exception as exc:  # noqa: BLE001
        raise unreadable(exc) from exc
    if not np.all(np.isfinite(data)):
        raise VolumeError(f"{name}: contains NaN or infinite values")
    if float(data.max()) == float(data.min()):
        raise VolumeError(f"{name}: constant image (all voxels {float(data.min()):g})")
    return nib.as_closest_canonical(nib.Nifti1Image(data, affine))


def _nifti_extension_bytes(path: Path) -> int:
    """Bytes between a single-file NIfTI header and its voxels (where extensions live); 0 for other files.

    Reads only the fixed-size header, itself decompressed if need be, so it costs the same for any file."""
    from nibabel.openers import ImageOpener

    with ImageOpener(str(path)) as handle:
        raw = handle.read(nib.Nifti2Header.sizeof_hdr)
    for klass in (nib.Nifti1Header, nib.Nifti2Header):
        size = klass.sizeof_hdr
        if len(raw) < size:
            continue
        try:
            header = klass(raw[:size], check=False)
        except Exception:  # noqa: BLE001 - not this kind of header: nib.load will say what is wrong
            continue
        if int(header["sizeof_hdr"]) == size and header["magic"].item() in (b"n+1", b"n+2"):
            return max(0, int(header["vox_offset"]) - size)
    return 0
