"""The ``detect`` command: argument parsing and printing only (``main.py`` dispatches).

Kept free of imports so that ``detect --help`` answers before TensorFlow loads.
"""
