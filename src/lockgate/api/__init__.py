"""The control REST API: a thin shell over the service layer, served by ``lockgate serve``."""
