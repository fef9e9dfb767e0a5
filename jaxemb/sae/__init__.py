"""jaxemb.sae."""
