"""Groups of decoder directions (spherical k-means over the rows of W_dec)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxemb import _validate as v
from jaxemb.retrieval import kmeans


def cluster_decoder_directions(
    W_dec: Any,
    n_clusters: int,
    *,
    key: jax.Array,
    n_iter: int = 100,
    eps: float = 1e-8,
) -> tuple[jax.Array, jax.Array]:
    """Spherical k-means on the unit decoder rows (groups of latents sharing a subspace).

    Spherical :func:`jaxemb.retrieval.kmeans`: rows are normalised to unit length; centroids
    start from k-means++ seeding (squared chord distance ``‖u − c‖² = 2 − 2 cos``) and Lloyd
    iterations assign every row to the centroid of largest cosine and set each centroid to the
    normalised mean of its rows (a cluster that empties keeps its centroid). Latents whose
    directions cluster together are candidates for a multi-dimensional feature (e.g. the
    circular day-of-week features of Engels et al.).

    Args:
      W_dec: ``[d_sae, d_in]`` decoder, or an SAE module (its ``W_dec`` is used).
      n_clusters: number of clusters, ``1 <= n_clusters <= d_sae``.
      key: PRNG key for the seeding.
      n_iter: Lloyd iterations.
      eps: kept for compatibility; the norms' floor is kmeans' 1e-12.

    Returns:
      ``(labels [d_sae] int32, centroids [n_clusters, d_in] float32 unit rows)``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxemb.sae import analysis
      >>> W = jnp.array([[1.0, 0.1], [1.0, -0.1], [2.0, 0.0], [0.0, 1.0], [0.1, 3.0]])
      >>> labels, cent = analysis.cluster_decoder_directions(W, 2, key=jax.random.key(0))
      >>> bool(labels[0] == labels[1] == labels[2]), bool(labels[3] == labels[4] != labels[0])
      (True, True)

    References:
      Dhillon and Modha, "Concept decompositions for large sparse text data using clustering"
      (2001), spherical k-means; Arthur and Vassilvitskii (2007), k-means++; Engels et al.,
      "Not All Language Model Features Are Linear" (2024), clustering SAE decoder directions.
    """
    if hasattr(W_dec, "W_dec") and not hasattr(W_dec, "shape"):
        W_dec = W_dec.W_dec[...]
    W_dec = v.check_array(W_dec, "W_dec", ndim=2, kind="float")
    v.check_int(n_clusters, "n_clusters", minimum=1, maximum=int(np.shape(W_dec)[0]))
    v.check_int(n_iter, "n_iter", minimum=0)
    v.check_positive(eps, "eps")
    if not isinstance(key, jax.Array) or key.shape != () and key.shape != (2,):
        raise ValueError(f"key must be a PRNG key such as jax.random.key(0); got {key!r}")
    if v.is_concrete(W_dec) and not np.isfinite(np.asarray(W_dec, np.float32)).all():
        raise ValueError("W_dec must be finite; it holds NaN or inf")
    del eps  # rows are normalised by jaxemb.retrieval.kmeans (eps 1e-12)
    result = kmeans(W_dec, n_clusters, key=key, n_iter=n_iter, metric="cosine")
    return result.labels, result.centroids
