"""The imagerecords Beam job: options, graph assembly, entry point (``python -m pipeline.run``)."""

__version__ = '0.1.0'
