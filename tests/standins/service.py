"""A stand-in for ComfyUI / JupyterLab in entrypoint tests: listens on --port and answers 'ok <name>'.

Accepts (and ignores) any other option the entrypoint passes to the real program. With --exit-code N it
exits at once with that code (a crashing service); it appends its pid to $STANDIN_LOG when it starts.
"""

import argparse
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, default=int(os.environ.get("COMFYUI_PORT", "0")))
parser.add_argument("--name", default="service")
parser.add_argument("--exit-code", type=int, default=None)
args, _unknown = parser.parse_known_args()
if os.environ.get("STANDIN_LOG"):
    with open(os.environ["STANDIN_LOG"], "a") as fh:
        fh.write(f"{args.name} {os.getpid()} {time.time():.3f} {os.getcwd()}\n")
print(f"{args.name} starting on {args.port}", flush=True)
if args.exit_code is not None:
    sys.exit(args.exit_code)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = f"ok {args.name} token={'set' if os.environ.get('JUPYTER_TOKEN') else 'unset'}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a: object) -> None:
        pass


HTTPServer.allow_reuse_address = True
HTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
