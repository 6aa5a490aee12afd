"""The page: its server (server.py, Starlette) and its editor (static/: HTML, JavaScript, CSS)."""
