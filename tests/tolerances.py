"""Tolerances that follow float32 rounding, so assertions hold on every CPU kind.

XLA compiles different kernels per instruction set (SSE4.2, AVX2, AVX-512, NEON), and a
sharded computation sums in a different order than a single-device one: float32 results then
differ in their last bits. Those differences scale with the magnitude of the whole array (its
largest entries), not with each entry, so an entry that is 0 in exact arithmetic carries
rounding noise of ~eps32 · max|x|. These helpers compare at that scale.
"""

from __future__ import annotations

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7


def assert_f32_close(got, want, *, rtol=1e-5, scale_tol=1e-5, err_msg=""):
    """Two float32 computations of the same array agree to ``rtol`` element-wise, or within
    ``scale_tol · max|want|`` (float32 rounding at the array's magnitude, ~84 ulps there)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=scale_tol * scale, err_msg=err_msg)
