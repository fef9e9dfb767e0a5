"""jaxemb.retrieval."""
