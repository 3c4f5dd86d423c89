"""Corpora: reading and tokenising text (``corpus``, and ``tokenise`` on
every core), the vocabulary (``vocab``), the token-id cache (``cache``,
``cachefile``) and the one way to read a file's ids (``ids.corpus_ids``), B
streams in windows of T steps (``batches``), and the King James Bible demo
corpus (``kjv``)."""
from elman.data.batches import Streams, batchify, check_enough, iter_batches, num_batches, preceding
from elman.data.cache import TokenIds
from elman.data.corpus import (
    CORPUS_FILES, EOS, LEVELS, UNK, line_tokens, read_lines, read_text, read_tokens, resolve_corpus, text_lines,
)
from elman.data.ids import corpus_ids
from elman.data.vocab import Vocab

__all__ = ["CORPUS_FILES", "EOS", "LEVELS", "UNK", "Streams", "TokenIds", "Vocab", "batchify", "check_enough",
           "corpus_ids", "iter_batches", "line_tokens", "num_batches", "preceding", "read_lines", "read_text", "read_tokens",
           "resolve_corpus", "text_lines"]
