"""API tokens: their format, hashing, scopes and expiry (tokens), their store on disk (store),
when authentication is required (policy), and the serving account's own token (local).

Nothing here imports Flask: the web app, the command line and the delivery hook share it.
"""
