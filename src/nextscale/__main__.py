"""`python -m nextscale …` (and `torchrun … -m nextscale …`): the same as the `nextscale` command."""

import sys

from .cli import main

sys.exit(main())
