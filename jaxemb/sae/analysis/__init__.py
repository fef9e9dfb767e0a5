"""Feature analysis for sparse autoencoders: examples, co-occurrence, families, steering.

* :func:`top_activating` streams a dataset through an encoder and keeps, for every latent, the
  rows that activate it most, with memory ``O(d_sae · top_n)`` whatever the dataset size.
* :func:`cooccurrence` counts how often pairs of latents fire together (streaming over
  batches) and :func:`normalized_cooccurrence` turns counts into association strengths;
  :func:`feature_families` builds the maximum spanning tree over them
  (:func:`maximum_spanning_forest`, on ``scipy.sparse.csgraph``) and cuts it into families of
  related latents ("Disentangling Dense Embeddings with Sparse Autoencoders").
* :func:`steer` adds a latent's decoder direction to inputs (Concept Steerers);
  :func:`clamp` sets one latent of the code and adds the reconstruction error back
  (feature-clamped search).
* :func:`cluster_decoder_directions` runs spherical k-means on the decoder rows to find groups
  of latents that span multi-dimensional features.
"""

from jaxemb.sae.analysis._clusters import cluster_decoder_directions as cluster_decoder_directions
from jaxemb.sae.analysis._cooccurrence import cooccurrence as cooccurrence
from jaxemb.sae.analysis._cooccurrence import normalized_cooccurrence as normalized_cooccurrence
from jaxemb.sae.analysis._families import FeatureFamilies as FeatureFamilies
from jaxemb.sae.analysis._families import feature_families as feature_families
from jaxemb.sae.analysis._families import maximum_spanning_forest as maximum_spanning_forest
from jaxemb.sae.analysis._steering import clamp as clamp
from jaxemb.sae.analysis._steering import steer as steer
from jaxemb.sae.analysis._top_examples import top_activating as top_activating

__all__ = [
    "FeatureFamilies",
    "clamp",
    "cluster_decoder_directions",
    "cooccurrence",
    "feature_families",
    "maximum_spanning_forest",
    "normalized_cooccurrence",
    "steer",
    "top_activating",
]
