"""Rotation conversions and Procrustes, batched over any leading dims (float32/float64).

Conventions (DESIGN.md, pinned by tests):

* axis-angle: a 3-vector whose direction is the axis and norm the angle (radians);
* 6D: the first two *columns* of R, concatenated ``[R[:, 0], R[:, 1]]`` (Zhou et al.,
  HMR 2.0). Back to R by Gram–Schmidt with the columns stacked. This is *not*
  SPIN's interleaved ``view(-1, 3, 2)`` layout;
* rotation matrices act on column vectors: ``x' = R @ x``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_SMALL_ANGLE = 1e-3


def _check_last(x: Tensor, shape: tuple[int, ...], name: str) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if tuple(x.shape[-len(shape) :]) != shape or x.dim() < len(shape):
        raise ValueError(f"{name} must have shape (..., {', '.join(map(str, shape))}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating point tensor, got {x.dtype}")


def skew(v: Tensor) -> Tensor:
    """(..., 3) → (..., 3, 3) cross-product matrix ``[v]×``."""
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    return torch.stack(
        [
            torch.stack([zero, -z, y], dim=-1),
            torch.stack([z, zero, -x], dim=-1),
            torch.stack([-y, x, zero], dim=-1),
        ],
        dim=-2,
    )


def axis_angle_to_rotmat(aa: Tensor) -> Tensor:
    """(..., 3) axis-angle → (..., 3, 3) rotation matrices (Rodrigues).

    Uses Taylor series below 1e-3 rad so that values and gradients stay finite at 0.
    """
    _check_last(aa, (3,), "axis_angle")
    theta2 = (aa * aa).sum(-1, keepdim=True)
    small = theta2 < _SMALL_ANGLE**2
    # Replace small angles before sqrt/division so the unused branch has no NaN gradient.
    safe_theta2 = torch.where(small, torch.ones_like(theta2), theta2)
    safe_theta = safe_theta2.sqrt()
    a_exact = torch.sin(safe_theta) / safe_theta
    b_exact = (1.0 - torch.cos(safe_theta)) / safe_theta2
    a_taylor = 1.0 - theta2 / 6.0 + theta2 * theta2 / 120.0
    b_taylor = 0.5 - theta2 / 24.0 + theta2 * theta2 / 720.0
    a = torch.where(small, a_taylor, a_exact)[..., None]
    b = torch.where(small, b_taylor, b_exact)[..., None]
    k = skew(aa)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand(k.shape)
    # [v]×² = v vᵀ − θ² I: an outer product instead of a batched 3×3 matmul (much faster on CPU).
    return (1.0 - b * theta2[..., None]) * eye + a * k + b * (aa[..., :, None] * aa[..., None, :])


def _sqrt_positive(x: Tensor) -> Tensor:
    # sqrt(max(x, 0)) whose gradient is 0 (not inf) where x <= 0.
    out = torch.zeros_like(x)
    pos = x > 0
    out[pos] = torch.sqrt(x[pos])
    return out


def rotmat_to_quaternion(rotmat: Tensor) -> Tensor:
    """(..., 3, 3) → (..., 4) unit quaternions ``(w, x, y, z)`` with ``w >= 0``.

    Shepperd's method: of the four algebraically equal formulas, use the one with the
    largest denominator, which keeps it accurate near 180°.
    """
    _check_last(rotmat, (3, 3), "rotmat")
    m = rotmat
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    q_abs = _sqrt_positive(
        torch.stack(
            [
                1.0 + m00 + m11 + m22,
                1.0 + m00 - m11 - m22,
                1.0 - m00 + m11 - m22,
                1.0 - m00 - m11 + m22,
            ],
            dim=-1,
        )
    )
    candidates = torch.stack(
        [
            torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
        ],
        dim=-2,
    )
    denom = 2.0 * q_abs.clamp(min=0.1)
    candidates = candidates / denom[..., None]
    best = q_abs.argmax(dim=-1)
    quat = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    sign = torch.where(quat[..., :1] < 0, -1.0, 1.0).to(quat.dtype)
    quat = quat * sign
    return quat / quat.norm(dim=-1, keepdim=True)


def quaternion_to_axis_angle(quat: Tensor) -> Tensor:
    """(..., 4) ``(w, x, y, z)`` → (..., 3) axis-angle with angle in [0, π]."""
    _check_last(quat, (4,), "quaternion")
    sign = torch.where(quat[..., :1] < 0, -1.0, 1.0).to(quat.dtype)
    quat = quat * sign
    w = quat[..., :1]
    xyz = quat[..., 1:]
    n2 = (xyz * xyz).sum(-1, keepdim=True)
    small = n2 < 1e-12
    safe_n = torch.where(small, torch.ones_like(n2), n2).sqrt()
    theta = 2.0 * torch.atan2(safe_n, w)
    # theta / sin(theta/2) = 2·atan(n/w)/n -> 2 / w * (1 - n^2 / (3 w^2)) near 0
    scale_exact = theta / safe_n
    scale_small = 2.0 / w.clamp(min=1e-6) * (1.0 - n2 / (3.0 * w.clamp(min=1e-6) ** 2))
    return xyz * torch.where(small, scale_small, scale_exact)


def rotmat_to_axis_angle(rotmat: Tensor) -> Tensor:
    """(..., 3, 3) → (..., 3) axis-angle, angle in [0, π]; stable near 0 and near π."""
    return quaternion_to_axis_angle(rotmat_to_quaternion(rotmat))


def rotmat_to_rot6d(rotmat: Tensor) -> Tensor:
    """(..., 3, 3) → (..., 6): ``[R[:, 0], R[:, 1]]`` (first two columns)."""
    _check_last(rotmat, (3, 3), "rotmat")
    return torch.cat([rotmat[..., :, 0], rotmat[..., :, 1]], dim=-1)


def rot6d_to_rotmat(x: Tensor, eps: float = 1e-8) -> Tensor:
    """(..., 6) → (..., 3, 3) by Gram–Schmidt on the two columns; columns stacked."""
    _check_last(x, (6,), "rot6d")
    a1, a2 = x[..., 0:3], x[..., 3:6]
    b1 = a1 / a1.norm(dim=-1, keepdim=True).clamp(min=eps)
    a2_orth = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = a2_orth / a2_orth.norm(dim=-1, keepdim=True).clamp(min=eps)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def axis_angle_to_rot6d(aa: Tensor) -> Tensor:
    return rotmat_to_rot6d(axis_angle_to_rotmat(aa))


def rot6d_to_axis_angle(x: Tensor) -> Tensor:
    return rotmat_to_axis_angle(rot6d_to_rotmat(x))


def geodesic_angle(r1: Tensor, r2: Tensor) -> Tensor:
    """Angle (radians) of ``r1ᵀ r2``: ``arccos((tr(R̂ᵀR) − 1) / 2)``, (..., 3, 3) → (...).

    Computed as ``2·atan2(|q_v|, |w|)`` of the relative rotation's quaternion,
    which equals the arccos formula but keeps precision near 0 and π.
    """
    _check_last(r1, (3, 3), "r1")
    _check_last(r2, (3, 3), "r2")
    rel = r1.transpose(-1, -2) @ r2
    q = rotmat_to_quaternion(rel)
    return 2.0 * torch.atan2(q[..., 1:].norm(dim=-1), q[..., 0].abs())


def rot_x(angle: float | Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Rotation about x by ``angle`` radians (a right-handed, column-vector convention)."""
    a = torch.as_tensor(angle, dtype=dtype)
    c, s = torch.cos(a), torch.sin(a)
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    return torch.stack(
        [torch.stack([one, zero, zero], -1), torch.stack([zero, c, -s], -1), torch.stack([zero, s, c], -1)],
        -2,
    )


def rot_z(angle: float | Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    a = torch.as_tensor(angle, dtype=dtype)
    c, s = torch.cos(a), torch.sin(a)
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    return torch.stack(
        [torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1), torch.stack([zero, zero, one], -1)],
        -2,
    )


def yaw_zyx(rotmat: Tensor) -> Tensor:
    """The z angle ``a`` of the decomposition ``R = Rz(a)·Ry(b)·Rx(c)``."""
    _check_last(rotmat, (3, 3), "rotmat")
    return torch.atan2(rotmat[..., 1, 0], rotmat[..., 0, 0])


def zup_root_to_camera_frame(root_aa: Tensor) -> Tensor:
    """AMASS/PoseScript root orientation (z-up world) → the frame of image data.

    DESIGN.md: zero the yaw of the root (decompose ``R = Rz·Ry·Rx``, set the z angle
    to 0), then left-multiply by ``Rx(+90°)``, so that an upright person gets a root
    near ``Rx(180°)``, as camera-frame (y down) image data has.
    """
    _check_last(root_aa, (3,), "root_aa")
    r = axis_angle_to_rotmat(root_aa)
    yaw = yaw_zyx(r)
    no_yaw = rot_z(-yaw, dtype=r.dtype) @ r
    rx90 = rot_x(math.pi / 2, dtype=r.dtype).to(r.device)
    return rotmat_to_axis_angle(rx90 @ no_yaw)


def similarity_procrustes(
    source: Tensor, target: Tensor, eps: float = 1e-12
) -> tuple[Tensor, Tensor, Tensor]:
    """Scale ``s``, rotation ``R`` and translation ``t`` minimising ``|s·R·x + t − y|²``.

    ``source`` and ``target``: (..., N, 3). Returns ``s`` (...), ``R`` (..., 3, 3)
    (a proper rotation, det +1) and ``t`` (..., 3) (Umeyama 1991).
    """
    _check_last(source, (3,), "source")
    _check_last(target, (3,), "target")
    if source.shape != target.shape:
        raise ValueError(
            f"source and target must have the same shape, got {tuple(source.shape)} and {tuple(target.shape)}"
        )
    mu_x = source.mean(-2, keepdim=True)
    mu_y = target.mean(-2, keepdim=True)
    x0 = source - mu_x
    y0 = target - mu_y
    n = source.shape[-2]
    var_x = (x0 * x0).sum((-1, -2)) / n
    cov = y0.transpose(-1, -2) @ x0 / n
    u, sing, vh = torch.linalg.svd(cov)
    det = torch.linalg.det(u @ vh)
    d = torch.ones_like(sing)
    d[..., 2] = torch.where(det < 0, -1.0, 1.0).to(sing.dtype)
    rot = u @ torch.diag_embed(d) @ vh
    scale = (sing * d).sum(-1) / var_x.clamp(min=eps)
    trans = mu_y.squeeze(-2) - scale[..., None] * (rot @ mu_x.squeeze(-2)[..., None]).squeeze(-1)
    return scale, rot, trans


def procrustes_align(source: Tensor, target: Tensor) -> Tensor:
    """``source`` (..., N, 3) after the best similarity transform onto ``target``."""
    s, r, t = similarity_procrustes(source, target)
    return s[..., None, None] * (source @ r.transpose(-1, -2)) + t[..., None, :]
