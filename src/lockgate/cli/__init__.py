"""The ``lockgate`` command line: thin commands over the service layer."""
