#!/usr/bin/env python3
"""A webhook receiver for opsdeck's [[notify]] hooks (docs/automation.md).

It checks each delivery's signature (X-Opsdeck-Signature: sha256=<hex>,
HMAC-SHA256 of the raw body with the hook's secret), answers 401 to a bad
one, skips an event id it has already seen (deliveries are at least once),
and prints one line per event. Python 3 standard library only, so it runs
anywhere opsdeck does and reads as the reference for writing your own.

    python3 examples/webhook-receiver.py --port 9000 --secret demo-webhook-secret-0123

The demo configuration (examples/opsdeck.toml) posts to
http://127.0.0.1:9000/opsdeck with that secret.
"""

import argparse
import hashlib
import hmac
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--secret", required=True, help="the hook's secret")
    args = ap.parse_args()
    secret = args.secret.encode()
    seen = set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            want = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
            got = self.headers.get("X-Opsdeck-Signature", "")
            if not hmac.compare_digest(want, got):
                self.send_response(401)
                self.end_headers()
                print("refused: bad signature", file=sys.stderr, flush=True)
                return
            event = json.loads(body)
            event_id = self.headers.get("X-Opsdeck-Event-Id", event.get("id"))
            self.send_response(204)
            self.end_headers()
            if event_id in seen:
                return
            seen.add(event_id)
            job = event.get("job") or {}
            what = f"job {job.get('id')} ({job.get('template')} on {job.get('target')})" if job else ""
            print(f"{event['at']} {event['kind']} {what} id={event_id}", flush=True)

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"listening on http://{args.host}:{args.port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
