"""Tumour laterality from a segmentation, in world (RAS) coordinates.

``score = (V_left - V_right) / (V_left + V_right)`` in [-1, 1]: +1 = whole tumour in the left hemisphere,
-1 = whole tumour in the right, 0 = balanced. Tumour = every voxel with ``seg > 0`` (so the score does not
depend on the label convention: BraTS 1/2/4, MSD 1/2/3).

Left and right are decided from the affine, never from array indices, so an image stored LPS (as the
BraTS releases are) and the same image stored RAS give the same score. In RAS world coordinates x grows
towards the subject's Right, so "left" means a world x smaller than the mid-sagittal plane.

The mid-sagittal plane is the plane x = x_mid, where x_mid is the world x of the brain mask's centroid
(brain mask = image > 0 for skull-stripped data). Without a mask, x_mid is the world x of the centre of
the field of view. Voxels whose centre lies on the plane (within 1e-6 mm) count half to each side, so
they enter the denominator but not the numerator.
"""

from __future__ import annotations

import numpy as np

_TIE_MM = 1e-6

LATERALITY_DEFINITION = (
    "(V_left - V_right) / (V_left + V_right) of seg > 0, +1 = left; sides from world RAS x (affine), "
    "relative to the world x of the brain-mask (image > 0) centroid; voxels on the plane count half"
)


def _check_affine(affine: np.ndarray) -> np.ndarray:
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
    if not np.all(np.isfinite(affine)):
        raise ValueError("affine has non-finite entries")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise ValueError(f"affine is singular:\n{affine}")
    return affine


def _mean_index(mask: np.ndarray) -> np.ndarray:
    """Mean voxel index of a boolean 3D mask, via per-axis projections (cheap for large volumes)."""
    count = mask.sum(dtype=np.float64)
    out = np.empty(3)
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        proj = mask.sum(axis=other, dtype=np.float64)
        out[axis] = (proj * np.arange(mask.shape[axis])).sum() / count
    return out


def midline_x(shape: tuple[int, ...], affine: np.ndarray, brain_mask: np.ndarray | None = None) -> float:
    """World x (mm) of the mid-sagittal plane: brain-mask centroid, else field-of-view centre."""
    affine = _check_affine(affine)
    if brain_mask is None:
        centre = (np.asarray(shape[:3], dtype=np.float64) - 1.0) / 2.0
    else:
        mask = np.asarray(brain_mask, dtype=bool)
        if mask.shape != tuple(shape[:3]):
            raise ValueError(f"brain mask shape {mask.shape} differs from segmentation shape {shape}")
        if not mask.any():
            raise ValueError("brain mask is empty (no voxel > 0)")
        centre = _mean_index(mask)
    return float(affine[0, :3] @ centre + affine[0, 3])


def laterality_score(seg: np.ndarray, affine: np.ndarray, brain_mask: np.ndarray | None = None) -> float:
    """(V_left - V_right) / (V_left + V_right) of ``seg > 0``; NaN when there is no tumour voxel.

    ``affine`` maps voxel indices of ``seg`` (and ``brain_mask``, same grid) to world RAS mm.
    """
    seg = np.asarray(seg)
    if seg.ndim == 4 and seg.shape[3] == 1:
        seg = seg[..., 0]
    if seg.ndim != 3:
        raise ValueError(f"segmentation must be 3D, got shape {seg.shape}")
    if brain_mask is not None:
        brain_mask = np.asarray(brain_mask)
        if brain_mask.ndim == 4 and brain_mask.shape[3] == 1:
            brain_mask = brain_mask[..., 0]
    x_mid = midline_x(seg.shape, affine, brain_mask)
    affine = np.asarray(affine, dtype=np.float64)
    idx = np.nonzero(seg > 0)
    if idx[0].size == 0:
        return float("nan")
    x = affine[0, 0] * idx[0] + affine[0, 1] * idx[1] + affine[0, 2] * idx[2] + affine[0, 3]
    offset = x - x_mid
    n_left = int(np.count_nonzero(offset < -_TIE_MM))
    n_right = int(np.count_nonzero(offset > _TIE_MM))
    n_tie = offset.size - n_left - n_right
    # Voxel volume |det| is the same for every voxel, so counts stand in for volumes.
    return float((n_left - n_right) / (n_left + n_right + n_tie))
