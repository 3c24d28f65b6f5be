"""`python -m mlproject ...` (and `torchrun -m mlproject train ...`)."""

from mlproject.cli import main

raise SystemExit(main())
