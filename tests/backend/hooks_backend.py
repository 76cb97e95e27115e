"""A small application backend for quotecast's hook tests (tests/it/hooks.rs).

Listens on 127.0.0.1 on a free port, prints the port on stdout, and answers:
  POST /subscribe  {"user","channel"} -> {"allow": bool, "reason"?}: seeds/001's ownership
                   check (user_owns_challenge) for challenge_{id} rooms
  POST /connect    {"data": {"sessionID","userId"}} or {"cookie": "sid=..."} -> seeds/002's
                   session check: the user,
                   an expiry, and `user:{userId}` to join; or a refusal with a reason
  POST /rpc        {"user","op","params"} -> join_challenge / leave_challenge as seeds/001's
                   socket handlers: subscribe or unsubscribe challenge_{id}, or refuse
  POST /slow       sleeps 3 s before answering (deadline tests)
  GET  /count      {"subscribe": n, ...}: calls received per path
Only the standard library: started with `python3 tests/backend/hooks_backend.py`.
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# seeds/001: which user owns which challenge.
OWNED = {"42": {"7"}, "43": {"8"}}
# seeds/002: the sessions the HTTP login handed out.
SESSIONS = {"s-123": "user-123", "s-456": "user-456"}
COUNTS = {}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, obj, status=200):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/count":
            with LOCK:
                self.answer(dict(COUNTS))
        else:
            self.answer({"error": "not found"}, 404)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        req = json.loads(self.rfile.read(n) or b"{}")
        with LOCK:
            COUNTS[self.path.strip("/")] = COUNTS.get(self.path.strip("/"), 0) + 1
        if self.path == "/subscribe":
            user, channel = req.get("user"), req.get("channel", "")
            cid = channel[len("challenge_"):] if channel.startswith("challenge_") else None
            if cid is not None and cid in OWNED.get(user, set()):
                self.answer({"allow": True})
            else:
                self.answer({"allow": False, "reason": "Access denied"})
        elif self.path == "/connect":
            data = req.get("data") or {}
            user = data.get("userId")
            cookies = dict(
                c.strip().split("=", 1) for c in (req.get("cookie") or "").split(";") if "=" in c
            )
            if "sid" in cookies and cookies["sid"] in SESSIONS:
                user = SESSIONS[cookies["sid"]]
                self.answer({"user": user, "subscribe": [f"user:{user}"]})
            elif SESSIONS.get(data.get("sessionID")) == user:
                self.answer({"user": user, "exp": int(time.time()) + 3600,
                             "subscribe": [f"user:{user}"]})
            else:
                self.answer({"user": None, "reason": "invalid session"})
        elif self.path == "/rpc":
            user, op, params = req.get("user"), req.get("op"), req.get("params") or {}
            cid = str(params.get("challenge_id"))
            if op == "join_challenge":
                if cid in OWNED.get(user, set()):
                    self.answer({"result": {"joined": cid}, "subscribe": [f"challenge_{cid}"]})
                else:
                    self.answer({"error": {"code": "forbidden", "message": "Access denied"}})
            elif op == "leave_challenge":
                self.answer({"result": None, "unsubscribe": [f"challenge_{cid}"]})
            else:
                self.answer({"error": {"code": "unknown", "message": f"no op {op}"}})
        elif self.path == "/slow":
            time.sleep(3)
            self.answer({"allow": True})
        else:
            self.answer({"error": "not found"}, 404)


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    print(srv.server_address[1], flush=True)
    # Ends with the test: the test kills it, or stdin closes.
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    sys.stdin.read()


if __name__ == "__main__":
    main()
