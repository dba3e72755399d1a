"""``python -m ablate.cli``: the ``ablate`` command."""

import sys

from ablate.cli.main import main

sys.exit(main())
