"""``python -m medassist.client``: the same as the ``medassist`` console script."""
import sys

from .cli import main

sys.exit(main())
