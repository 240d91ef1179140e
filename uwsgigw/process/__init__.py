"""Process supervision: the master, its workers' common base, recycling,
reloads (the handover), harakiri, sockets, systemd, the stats server.
"""
