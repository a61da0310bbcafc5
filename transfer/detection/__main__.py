import sys

from transfer.detection.cli import main

sys.exit(main())
