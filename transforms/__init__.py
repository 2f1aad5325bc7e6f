"""The PTransforms and DoFns of the imagerecords job, one module per concern."""
