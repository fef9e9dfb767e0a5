"""Independent NumPy (float64) references shared by the loss tests."""

import numpy as np


def normalize(x, eps=1e-12):
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def logsumexp(a, axis=-1):
    a = np.asarray(a, np.float64)
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m, axis)


def numeric_grad(f, x, eps=1e-6):
    """Central finite differences of a scalar float64 function."""
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        g[i] = (f(xp) - f(xm)) / (2 * eps)
    return g


def nt_xent(z1, z2, t, labels=None):
    z = normalize(np.concatenate([z1, z2]))
    s = z @ z.T / t
    n2 = len(z)
    n = n2 // 2
    if labels is None:
        total = 0.0
        for i in range(n2):
            pos = (i + n) % n2
            others = [s[i, j] for j in range(n2) if j != i]
            total += logsumexp(np.array(others)) - s[i, pos]
        return total / n2
    lab = np.concatenate([labels, labels])
    losses = []
    for i in range(n2):
        negs = [s[i, j] for j in range(n2) if lab[j] != lab[i]]
        for p in range(n2):
            if p != i and lab[p] == lab[i]:
                losses.append(logsumexp(np.array([s[i, p]] + negs)) - s[i, p])
    return np.mean(losses) if losses else 0.0
