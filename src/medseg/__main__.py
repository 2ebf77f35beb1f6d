"""``python -m medseg`` (and ``torchrun -m medseg``) runs the ``medseg`` command."""

from medseg.cli import main

if __name__ == "__main__":
    main()
