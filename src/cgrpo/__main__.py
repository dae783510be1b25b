"""``python -m cgrpo`` (and ``accelerate launch -m cgrpo``) runs the CLI."""

import sys

from cgrpo.cli import main

sys.exit(main())
