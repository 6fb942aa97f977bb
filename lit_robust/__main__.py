"""``python -m lit_robust``: see :mod:`lit_robust.cli`."""

from lit_robust.cli import main

if __name__ == "__main__":
    main()
