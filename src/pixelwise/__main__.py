"""`python -m pixelwise ...` (also how torchrun starts it)."""

from .cli import main

raise SystemExit(main())
