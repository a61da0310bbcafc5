import sys

from transfer.classification.cli import main

sys.exit(main())
