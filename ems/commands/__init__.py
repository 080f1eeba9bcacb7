"""Sub-commands of the ``ems`` CLI, one module each (see :mod:`ems.cli`)."""
