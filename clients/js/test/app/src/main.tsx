// A trading UI as a newcomer writes it from docs/client.md: live quotes and user 42's
// orders with the React hooks of @quotecast/client. The page's own backend hands out the
// WebSocket token at /api/ws-token; ?server=HOST:PORT names the quotecast server.
import { useState } from "react";
import { createRoot } from "react-dom/client";
import { QuotecastClient, type DemoEvents, type OrderUpdate, type Quote } from "@quotecast/client";
import { QuotecastProvider, useChannel, useConnectionState, useLatency } from "@quotecast/client/react";

const server = new URLSearchParams(location.search).get("server") ?? location.host;
const client = new QuotecastClient({
  url: `ws://${server}/ws`,
  token: () => fetch("/api/ws-token").then((r) => r.text()),
});

function Status() {
  const state = useConnectionState();
  const latency = useLatency();
  return (
    <p id="status" data-state={state}>
      {state} {latency ? `${latency.rttMs.toFixed(1)} ms` : ""}
    </p>
  );
}

function QuoteRow({ symbol }: { symbol: string }) {
  const ev = useChannel<{ quote: Quote }>(`quotes.${symbol}`, { maxHz: 10 });
  return (
    <tr id={`quote-${symbol}`} data-seq={ev?.seq ?? 0}>
      <td>{symbol}</td>
      <td className="bid">{ev?.data.bid}</td>
      <td className="ask">{ev?.data.ask}</td>
    </tr>
  );
}

function Orders({ userId }: { userId: number }) {
  const [orders, setOrders] = useState(new Map<string, OrderUpdate>());
  // DemoEvents is an interface: the event map constraint must accept it.
  useChannel<DemoEvents>(`user.${userId}.orders`, {
    onEvent: (ev) => {
      if (ev.event !== "order_update") return;
      const o = ev.data as OrderUpdate;
      setOrders((m) => new Map(m).set(o.order_id, o));
    },
    onRecoveryFailed: () => setOrders(new Map()),
  });
  return (
    <table id="orders">
      <tbody>
        {[...orders.values()].map((o) => (
          <tr key={o.order_id}>
            <td>{o.order_id}</td>
            <td>{o.symbol}</td>
            <td>{o.status}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function App() {
  return (
    <QuotecastProvider client={client}>
      <Status />
      <table id="quotes">
        <tbody>
          <QuoteRow symbol="AAPL" />
          <QuoteRow symbol="MSFT" />
        </tbody>
      </table>
      <Orders userId={42} />
    </QuotecastProvider>
  );
}

createRoot(document.getElementById("root")!).render(<App />);
