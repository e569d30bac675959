"""The admin web page (issue 9): server-rendered pages under /admin/ui on top of the admin API.

`routes.router` is included by the app factory. Pages call the admin API's handlers and read
models in-process; all assets are served by the app (no CDN, works offline).
"""
