"""The ``jaxspec`` command: :func:`main` (``jaxspec.cli:main``), one module per subcommand.

``jaxspec demo [NAME]`` (:mod:`jaxspec.cli.demo`, the demos in
:mod:`jaxspec.cli.demos`), ``jaxspec info`` (:mod:`jaxspec.cli.info`) and
``jaxspec lux train|predict`` (:mod:`jaxspec.cli.lux`).
"""

from jaxspec.cli.main import main

__all__ = ["main"]
