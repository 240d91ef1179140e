"""The uwsgi protocol: the sans-IO packet decoders (C and Python twins), their
typed errors, and the PEP 3333 environ built from the vars.
"""
