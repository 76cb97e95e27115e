"""The official `pusher` SDK from PyPI against quotecast (driven by python.test.mjs):
trigger, trigger_batch, channel info, users list, and a wrong secret refused.
Arguments: port app_id key secret. Prints one JSON line of results."""
import json
import sys

import pusher

port, app_id, key, secret = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]


def client(s):
    return pusher.Pusher(app_id=app_id, key=key, secret=s, host="127.0.0.1", port=int(port), ssl=False)


p = client(secret)
out = {}
out["trigger"] = p.trigger("py-orders", "OrderUpdated", {"from": "python", "n": 1})
out["batch"] = p.trigger_batch([
    {"channel": "py-orders", "name": "OrderUpdated", "data": {"from": "python", "n": 2}},
])
out["info"] = p.channel_info("py-orders", ["subscription_count"])
out["users"] = p.users_info("presence-py")
try:
    client("wrong-secret-000000").trigger("py-orders", "OrderUpdated", {"from": "python", "n": 99})
    out["wrong_secret"] = "accepted"
except pusher.errors.PusherBadAuth as e:
    out["wrong_secret"] = "PusherBadAuth"
print(json.dumps(out))
