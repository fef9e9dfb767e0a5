"""jaxemb.analysis."""
