"""Models of other toolkits: Mikolov's RNNLM files."""
