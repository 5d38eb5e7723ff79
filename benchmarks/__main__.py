"""``python -m benchmarks [--quick]``; see :mod:`benchmarks.harness`."""

from .harness import main

raise SystemExit(main())
