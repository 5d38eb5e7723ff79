"""The test suite. Its processes keep their compiled files (and pytest's rewritten test modules)
even where ``PYTHONDONTWRITEBYTECODE`` is set: each of the four xdist processes imports every
test module, and rewriting them all again costs each about 4 CPU seconds a run."""

import sys

sys.dont_write_bytecode = False
