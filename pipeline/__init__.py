"""The imagerecords Beam job: options (``options``), the typed job configuration built from them
(``config.JobConfig``), graph assembly and entry point (``run``: ``python -m pipeline.run``), the
nightly plan (``nightly``), outputs and console (``outputs``, ``progress``)."""

__version__ = '0.1.0'
