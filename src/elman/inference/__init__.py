"""Using a trained model: perplexity, per-line scores and sampling (``evaluate``)."""
