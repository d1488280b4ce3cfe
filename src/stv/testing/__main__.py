"""``python -m stv.testing list | build FAMILY DIR``"""

from . import main

main()
