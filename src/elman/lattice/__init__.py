"""Lattice rescoring: HTK SLF and Kaldi text lattices, expanded so that the
RNN's state has one history per lattice state, scored in batches."""
