"""Training recipes that ship with the package, chosen by name: ``--config aerial-cpu``.

Each is a YAML file in this folder (model / data / train sections, commented with the
measurements behind its choices); :func:`recipe_path` turns a name into its file.
"""
