"""What is observed of requests and workers: the request record and its
counters, the request log, the scoreboard the stats read.
"""
