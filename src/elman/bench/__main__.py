"""``python -m elman.bench [options]``: the same as ``elman bench [options]``."""
import sys

from elman.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
