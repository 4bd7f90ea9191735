"""Cluster resources and placement for trials (manifests for real clusters live beside this)."""
