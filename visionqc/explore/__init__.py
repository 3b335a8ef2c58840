"""Explore: the embedding map (2-D projections) and what it finds (outlier scores, near-duplicates).

Numpy only at import time; t-SNE loads torch and UMAP loads umap-learn when they are chosen.
"""
