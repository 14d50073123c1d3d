"""``python -m service``: the same as ``dae-serve``."""

from service.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
