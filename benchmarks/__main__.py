"""Entry point: ``python -m benchmarks`` (see ``benchmarks.runner``)."""
from .runner import main

raise SystemExit(main())
