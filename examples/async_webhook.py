"""An asynchronous prediction with a webhook receiver: progress as it happens, the output when done.

    python examples/async_webhook.py --prompt "a portrait in a garden" --reference me.jpg \
        --webhook-host 192.168.1.20 --out out.png

It starts a small HTTP receiver on --webhook-host:--webhook-port, submits the prediction with
`Prefer: respond-async` (the server answers 202 at once) and Cog's `webhook` and `webhook_events_filter`,
prints each event the server posts (start, log lines with the denoising step counter, completed) and saves
the output from the `completed` event. --webhook-host must be an address the server can reach (the
container's host, not localhost, when the server runs in Docker).
"""

from __future__ import annotations

import http.server
import json
import queue
import sys
import threading

from client import (
    FILE_INPUTS,
    as_input,
    build_parser,
    error_sentence,
    parse_inputs,
    post_with_retry,
    save_output,
)

TERMINAL = ("succeeded", "failed", "canceled")


def start_receiver(host: str, port: int) -> tuple[http.server.HTTPServer, queue.Queue]:
    """An HTTP server that puts every JSON body POSTed to it on a queue."""
    events: queue.Queue = queue.Queue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            events.put(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):  # the events are printed below; access lines are noise
            pass

    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, events


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(__doc__.splitlines()[0])
    parser.add_argument("--webhook-host", default="127.0.0.1", help="address the server can reach us at")
    parser.add_argument("--webhook-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for completion")
    args = parser.parse_args(argv)
    inputs = {k: as_input(v) if k in FILE_INPUTS else v for k, v in parse_inputs(args).items()}

    receiver, events = start_receiver(args.webhook_host, args.webhook_port)
    webhook = f"http://{args.webhook_host}:{receiver.server_address[1]}/webhook"
    payload = {"input": inputs, "webhook": webhook, "webhook_events_filter": ["start", "logs", "completed"]}
    response = post_with_retry(
        f"{args.server.rstrip('/')}/predictions", payload, headers={"Prefer": "respond-async"}
    )
    response.raise_for_status()
    print(f"submitted: HTTP {response.status_code}, prediction {response.json().get('id')}")

    seen_logs = 0
    try:
        while True:
            event = events.get(timeout=args.timeout)
            # The server's lines end at "\n" alone: it writes every other line break escaped, so a
            # prompt's "\r" or U+2028 is not a line of its own (str.splitlines would make it one).
            text = event.get("logs") or ""
            logs = text.removesuffix("\n").split("\n") if text else []
            for line in logs[seen_logs:]:
                print(f"  log: {line}")
            seen_logs = max(seen_logs, len(logs))
            step = (event.get("metrics") or {}).get("denoising_step")
            print(f"event: status={event['status']}" + (f" denoising_step={step}" if step else ""))
            if event["status"] in TERMINAL:
                break
    except queue.Empty:
        print(f"no completed event within {args.timeout} s", file=sys.stderr)
        return 1
    finally:
        receiver.shutdown()
    if event["status"] != "succeeded":
        error = event.get("error")
        print(error_sentence(error) if error else f"prediction {event['status']}", file=sys.stderr)
        return 1
    save_output(event["output"], args.out)
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
