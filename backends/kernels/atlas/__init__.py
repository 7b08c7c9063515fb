"""interpgram.backends.kernels.atlas: activation atlases (collect, store, layout, grid)."""
