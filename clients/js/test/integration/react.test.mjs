// The React entry point against a real server: useChannel renders the latest event,
// useConnectionState follows the connection, unmounting unsubscribes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createElement as h } from "react";
import TestRenderer from "react-test-renderer";
import { QuotecastClient } from "../../dist/index.js";
import { QuotecastProvider, useChannel, useConnectionState } from "../../dist/react.js";
import { startServer, publishHttp, waitFor } from "../helpers.mjs";

globalThis.IS_REACT_ACT_ENVIRONMENT = false;

test("useChannel and useConnectionState", { timeout: 20_000 }, async (t) => {
  const srv = await startServer();
  t.after(() => srv.stop());
  const client = new QuotecastClient({ url: srv.url, pingIntervalMs: 0 });
  t.after(() => client.close());
  const seen = [];
  function Orders() {
    const state = useConnectionState();
    const last = useChannel("trades.TEST", { snapshot: false, onEvent: (ev) => seen.push(ev.seq) });
    return h("p", null, `${state} ${last ? `${last.seq}:${last.data.status}` : "-"}`);
  }
  const r = TestRenderer.create(h(QuotecastProvider, { client }, h(Orders)));
  const text = () => r.root.findByType("p").props.children;
  await waitFor(() => text() === "open -" && client.subscribedChannels.length === 1, 5_000, "open");
  await client.ping(); // the subscribe was processed
  await publishHttp(srv.port, [1, 2, 3].map((n) => ({ channel: "trades.TEST", event: "order_update", data: { status: `s${n}` } })));
  await waitFor(() => text() === "open 3:s3", 5_000, "latest event rendered");
  assert.deepEqual(seen, [1, 2, 3]);
  r.unmount();
  await waitFor(() => client.subscribedChannels.length === 0, 5_000, "unmount unsubscribes");
});
