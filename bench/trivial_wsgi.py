"""The cheapest answer a server can give: what bench_load.py --calibrate drives in place of the app, to
show how much of a level's latency and CPU the load generator, gunicorn and the loopback cost alone."""


def application(environ, start_response):
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    body = b'{"stored": true}'
    start_response("201 Created", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
