import sys

from transfer.segmentation.cli import main

sys.exit(main())
