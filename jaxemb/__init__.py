"""jaxemb: learning, compressing and interpreting embeddings in JAX.

Subpackages (one per pillar): ``losses``, ``parallel``, ``checkpoint``, ``data``, ``sae``,
``encoders``, ``analysis``, ``retrieval``. Import them explicitly, e.g.
``from jaxemb import losses``.
"""

__version__ = "0.1.0"
