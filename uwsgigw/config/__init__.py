"""The configuration: the option table, the uWSGI INI reader and the Config
it builds; everything else reads a Config.
"""
