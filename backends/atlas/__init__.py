"""interpgram.backends.atlas: activation atlases (collect, store, layout, grid)."""
