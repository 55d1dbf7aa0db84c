"""The lockgate server: the one process that opens the store and holds the secrets.

``app.py`` wires the gateway, the service layer, the control API and the eval worker into one ASGI app;
``asgi.py`` rebuilds it in each worker process; ``run.py`` is ``lockgate serve``; ``bootstrap.py`` is
what the first start creates.
"""
