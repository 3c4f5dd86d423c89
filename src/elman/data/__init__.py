"""Corpora: reading and tokenising text (``corpus``), the vocabulary
(``vocab``), B streams in windows of T steps (``batches``), and the King
James Bible demo corpus (``kjv``)."""
from elman.data.batches import batchify, check_enough, iter_batches, num_batches, preceding
from elman.data.corpus import (
    CORPUS_FILES, EOS, LEVELS, UNK, line_tokens, read_lines, read_text, read_tokens, resolve_corpus, text_lines,
)
from elman.data.vocab import Vocab

__all__ = ["CORPUS_FILES", "EOS", "LEVELS", "UNK", "Vocab", "batchify", "check_enough", "iter_batches",
           "line_tokens", "num_batches", "preceding", "read_lines", "read_text", "read_tokens", "resolve_corpus", "text_lines"]
