"""The request cycle's rules and parts every driver shares: what happens to a
request (request.py), its body (body.py), its response head (response.py)
and how its connection ends (ending.py).
"""
