import sys

from transfer.adapters.cli import main

sys.exit(main())
