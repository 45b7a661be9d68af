"""``python -m watcher.cli``: the same as the ``watcher`` script."""
from . import main

if __name__ == "__main__":  # pragma: no cover
    main()
