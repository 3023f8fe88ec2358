import sys

from coordd.service.main import main

sys.exit(main())
