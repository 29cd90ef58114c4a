"""The federated quality-inspection Flower app (flwr and numpy only).

``server_app`` (the owner's aggregator), ``client_app`` (each party's trainer), ``data``
(each party's non-IID images and the ``prepare`` command line), ``features`` and ``model``
(the numpy classifier), ``surfaces`` (a verbatim copy of the quality-inspection template's
image generator: the app travels to the parties as one folder), ``simulate`` (the same app
in Flower's simulation engine).
"""
