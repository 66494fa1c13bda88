"""Studies built on the engine: the gradient-masking audit, the papers' case studies (COUP's
confidence paths, heterogeneous-noise masks) and the demo."""
