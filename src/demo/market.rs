//! Simulated market for the `demo` mode: a deterministic source of realistic market-data
//! and per-user trading events.
//!
//! Where it sits: outside the publish → socket pipeline, beside it. The server's demo runner
//! calls [`DemoMarket::tick`] every ~10 ms with the time since it started and publishes the
//! returned [`DemoEvent`]s through the ordinary publish path, exactly as an external
//! publisher would. Like the engine core this module does no I/O: time is an input, and the
//! only clock read is the wall-clock origin taken once in [`DemoMarket::new`]. For a given
//! seed, origin and sequence of `tick` calls the output is identical.
//!
//! Payload fields follow the platforms quotecast replaces (the project's seed docs); the
//! event names are those platforms' events spelled in one lower_snake_case style, so one
//! client handles them all: seeds/002's `trade:executed` and `market:status` are
//! `trade_executed` and `market_status`, its `quote:update` and seeds/003's `tick` are both
//! `quote`; seeds/003's `signal` and `order_update` are kept as they are; seeds/001's
//! `EQUITY_UPDATED`, `RISK_ALERT` and `CHALLENGE_STATUS_CHANGED` are `equity_updated`,
//! `risk_alert` and `challenge_status_changed` (money as strings with 2 decimals there, as
//! in seeds/001).
//!
//! | channel               | event                      | when |
//! |-----------------------|----------------------------|------|
//! | `quotes.{SYM}`        | `quote`                    | `quotes_per_sec` in total, skewed to the first symbols |
//! | `trades.{SYM}`        | `trade_executed`           | `trades_per_sec` in total, same skew |
//! | `market.status`       | `market_status`            | at start, then every 30 s |
//! | `signals.{SYM}`       | `signal`                   | about once a second |
//! | `user.{u}.orders`     | `order_update`             | every `private_every_ms`, per user |
//! | `user.{u}.positions`  | `position_update`          | every `private_every_ms`, per user |
//! | `user.{u}.equity`     | `equity_updated`           | every `private_every_ms`, per user |
//! | `user.{u}.risk`       | `risk_alert`               | about 1 round in 5 |
//! | `user.{u}.challenge`  | `challenge_status_changed` | about 1 round in 150 (every ~5 min) |
//!
//! Timestamps are RFC 3339 UTC strings with milliseconds (`2025-01-15T12:00:00.123Z`), as
//! in every seed, computed as origin + elapsed. Prices are JSON numbers rounded to the
//! instrument's tick: 2 decimals for stocks, 5 for FX (3 for JPY pairs, as FX venues quote).
//! Order/position quantities are shares for stocks and lots (0.01 steps) for FX.
//!
//! Prices follow a geometric random walk in *time* (not per update), mean-reverting to the
//! previous close so a demo left running for days still looks like a normal session, and
//! held within ±0.5 in log price (−39 %…+65 % of the close), so they are always positive. Each user's equity is
//! marked to market from their positions at the simulated mids, so the equity, position
//! and order streams agree with each other and with the quotes.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Knobs for the simulated market.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Number of symbols, default 300: well-known stocks and FX pairs first (the busiest),
    /// then generated tickers. Clamped to `1..=100_000`.
    pub symbols: usize,
    /// Total quote rate across all symbols, default 2000.
    pub quotes_per_sec: u32,
    /// Total trade rate across all symbols, default 200.
    pub trades_per_sec: u32,
    /// Demo users that get private `user.{u}.*` channels, default `[42, 43, 44]`.
    pub users: Vec<u64>,
    /// Every this many milliseconds each user gets a round of private events, default
    /// 2000; 0 turns private events off.
    pub private_every_ms: u64,
    /// Seed of the random generator; the same seed gives the same market.
    pub seed: u64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            symbols: 300,
            quotes_per_sec: 2000,
            trades_per_sec: 200,
            users: vec![42, 43, 44],
            private_every_ms: 2000,
            seed: 0x5eed,
        }
    }
}

/// One event to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoEvent {
    /// Channel to publish on, e.g. `quotes.AAPL`.
    pub channel: String,
    /// Event name, e.g. `quote`.
    pub event: &'static str,
    /// Payload: one compact JSON object.
    pub data: String,
}

// Event names this module emits, all valid protocol event names.
/// On `quotes.{SYM}`.
pub(crate) const EV_QUOTE: &str = "quote";
/// On `trades.{SYM}`.
pub(crate) const EV_TRADE: &str = "trade_executed";
/// On `market.status`.
pub(crate) const EV_MARKET_STATUS: &str = "market_status";
/// On `signals.{SYM}`.
pub(crate) const EV_SIGNAL: &str = "signal";
/// On `user.{u}.orders`.
pub(crate) const EV_ORDER: &str = "order_update";
/// On `user.{u}.positions`.
pub(crate) const EV_POSITION: &str = "position_update";
/// On `user.{u}.equity`.
pub(crate) const EV_EQUITY: &str = "equity_updated";
/// On `user.{u}.risk`.
pub(crate) const EV_RISK: &str = "risk_alert";
/// On `user.{u}.challenge`.
pub(crate) const EV_CHALLENGE: &str = "challenge_status_changed";

const NS_PER_SEC: u64 = 1_000_000_000;
const NS_PER_MS: u64 = 1_000_000;
const DAY_MS: u64 = 86_400_000;
/// A caller that stalls gets at most this much simulated activity in one `tick` (the brief:
/// never flood subscribers with a burst after a pause); the rest of the gap is skipped.
const MAX_CATCH_UP_NS: u64 = NS_PER_SEC;
/// `market.status` period, as often as a client banner needs to stay current.
const STATUS_PERIOD_NS: u64 = 30 * NS_PER_SEC;
/// Gap between signals is uniform in this range (ms): about one a second.
const SIGNAL_GAP_MS: (u64, u64) = (500, 1500);
/// Upper bound on `symbols`: keeps ticker generation (3–5 random letters) cheap and sure
/// to terminate, far above what a demo board shows.
const MAX_SYMBOLS: usize = 100_000;
/// Pull of the log price back to the previous close, per second (half-life ≈ 80 min):
/// long demos stay near realistic levels instead of drifting off.
const MEAN_REVERSION_PER_SEC: f64 = 1.0 / 7200.0;
/// Hard bound on |ln(mid / previous close)|, a circuit breaker keeping prices positive.
const MAX_LOG_DEVIATION: f64 = 0.5;
/// Volatility per √second: about 2 %/√hour for stocks, visibly moving on a board.
const STOCK_SIGMA: f64 = 3e-4;
/// FX is about five times calmer than stocks.
const FX_SIGMA: f64 = 6e-5;
/// Users trade only among the first, most liquid symbols, like a real retail book.
const LIQUID_SYMBOLS: usize = 30;
/// Starting equity of every demo challenge: $100,000.00.
const START_EQUITY_CENTS: i64 = 10_000_000;
/// A user holds at most this many positions; further orders close the oldest.
const MAX_OPEN_POSITIONS: usize = 3;
/// One new order in this many is cancelled instead of filled.
const CANCEL_ONE_IN: u32 = 5;
/// One private round in this many also carries a `risk_alert`.
const RISK_ALERT_ONE_IN: u32 = 5;
/// One private round in this many also carries a `challenge_status_changed`.
const CHALLENGE_CHANGE_ONE_IN: u32 = 150;
/// Daily drawdown limit the risk alerts measure against, in percent (seed 001).
const DAILY_DRAWDOWN_LIMIT: f64 = 5.0;
/// Overall drawdown limit (from the equity peak) for the other alert type, in percent.
const TOTAL_DRAWDOWN_LIMIT: f64 = 10.0;
/// Models named in `signal` events (seed 003 shows "LSTM").
const MODELS: [&str; 4] = ["LSTM", "XGBoost", "Transformer", "SMC"];
/// Trade sizes in shares, weighted towards round lots.
const SHARE_SIZES: [u64; 10] = [1, 5, 10, 25, 50, 100, 100, 200, 300, 500];

/// How an instrument is priced and how its P&L converts to dollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Shares, quoted in USD with 2 decimals.
    Stock,
    /// FX pair quoted in USD (EURUSD): P&L is already in dollars.
    FxUsdQuote,
    /// FX pair with USD as base (USDJPY): P&L is in the quote currency, divided by the rate.
    FxUsdBase,
}

/// The well-known instruments that open the symbol list: (ticker, last close, kind).
/// FX pairs are interleaved so even a small `symbols` includes EURUSD.
const KNOWN: &[(&str, f64, Kind)] = &[
    ("AAPL", 189.50, Kind::Stock),
    ("MSFT", 415.20, Kind::Stock),
    ("EURUSD", 1.08500, Kind::FxUsdQuote),
    ("NVDA", 121.40, Kind::Stock),
    ("AMZN", 181.30, Kind::Stock),
    ("TSLA", 242.10, Kind::Stock),
    ("GBPUSD", 1.27150, Kind::FxUsdQuote),
    ("GOOGL", 165.80, Kind::Stock),
    ("META", 502.60, Kind::Stock),
    ("USDJPY", 148.520, Kind::FxUsdBase),
    ("JPM", 199.70, Kind::Stock),
    ("V", 276.40, Kind::Stock),
    ("AUDUSD", 0.66120, Kind::FxUsdQuote),
    ("UNH", 521.90, Kind::Stock),
    ("XOM", 114.80, Kind::Stock),
    ("USDCAD", 1.36040, Kind::FxUsdBase),
    ("LLY", 801.30, Kind::Stock),
    ("AVGO", 164.20, Kind::Stock),
    ("USDCHF", 0.88210, Kind::FxUsdBase),
    ("WMT", 68.40, Kind::Stock),
    ("MA", 459.10, Kind::Stock),
    ("NZDUSD", 0.61030, Kind::FxUsdQuote),
    ("JNJ", 155.30, Kind::Stock),
    ("PG", 165.70, Kind::Stock),
    ("HD", 361.20, Kind::Stock),
    ("COST", 879.60, Kind::Stock),
    ("AMD", 155.90, Kind::Stock),
    ("NFLX", 652.40, Kind::Stock),
    ("CVX", 154.60, Kind::Stock),
    ("ABBV", 175.20, Kind::Stock),
    ("KO", 62.30, Kind::Stock),
    ("PEP", 170.10, Kind::Stock),
    ("MRK", 110.40, Kind::Stock),
    ("BAC", 39.80, Kind::Stock),
    ("ORCL", 139.90, Kind::Stock),
    ("CRM", 271.50, Kind::Stock),
    ("ADBE", 519.80, Kind::Stock),
    ("INTC", 22.10, Kind::Stock),
    ("DIS", 95.30, Kind::Stock),
    ("CSCO", 49.70, Kind::Stock),
    ("QCOM", 169.40, Kind::Stock),
    ("IBM", 190.20, Kind::Stock),
    ("NKE", 80.60, Kind::Stock),
    ("PFE", 28.40, Kind::Stock),
    ("GS", 481.30, Kind::Stock),
    ("BA", 170.90, Kind::Stock),
    ("CAT", 352.10, Kind::Stock),
    ("UBER", 70.20, Kind::Stock),
    ("PYPL", 65.40, Kind::Stock),
    ("T", 19.90, Kind::Stock),
];

/// One instrument's simulated state. Its ticker lives in `DemoMarket::symbols`.
#[derive(Debug)]
struct Instrument {
    /// Pricing and P&L convention.
    kind: Kind,
    /// 10^decimals: one tick is `1 / scale`.
    scale: f64,
    /// Previous close: the reference for `change` and the walk's mean-reversion anchor.
    prev_close: f64,
    /// ln(mid / prev_close), the walk's state.
    log_dev: f64,
    /// Volatility per √second of this instrument.
    sigma: f64,
    /// Simulated time (ns since start) the walk was last advanced to.
    walked_ns: u64,
    /// Last trade price in ticks, reported as `last`.
    last_ticks: i64,
    /// Cumulative volume: shares, or base-currency units for FX.
    volume: u64,
    /// `quotes.{SYM}`, built once so each event costs a clone, not a format.
    quotes_channel: String,
    /// `trades.{SYM}`.
    trades_channel: String,
    /// `signals.{SYM}`.
    signals_channel: String,
}

impl Instrument {
    fn new(name: &str, kind: Kind, close: f64, sigma: f64, rng: &mut SmallRng) -> Self {
        let decimals = match kind {
            Kind::Stock => 2,
            _ if name.ends_with("JPY") => 3,
            _ => 5,
        };
        let mut inst = Self {
            kind,
            scale: 10f64.powi(decimals),
            prev_close: close,
            // Open about two hours of movement away from the close, so `change` is not zero
            // everywhere at start.
            log_dev: normal(rng) * sigma * 85.0,
            sigma,
            walked_ns: 0,
            last_ticks: 0,
            volume: match kind {
                Kind::Stock => rng.gen_range(100_000..5_000_000),
                _ => rng.gen_range(1_000..10_000) * 100_000,
            },
            quotes_channel: format!("quotes.{name}"),
            trades_channel: format!("trades.{name}"),
            signals_channel: format!("signals.{name}"),
        };
        inst.last_ticks = inst.mid_ticks();
        inst
    }

    /// Price → ticks, never below one tick.
    fn ticks(&self, price: f64) -> i64 {
        ((price * self.scale).round() as i64).max(1)
    }

    /// Ticks → the closest `f64` to the decimal price, so JSON prints e.g. `189.52`.
    fn price(&self, ticks: i64) -> f64 {
        ticks as f64 / self.scale
    }

    fn mid_ticks(&self) -> i64 {
        self.ticks(self.prev_close * self.log_dev.exp())
    }

    /// Advance the mean-reverting log walk to `at_ns`; time-based, so a hot symbol quoted
    /// 100 times a second is no more volatile than a quiet one.
    fn walk_to(&mut self, at_ns: u64, rng: &mut SmallRng) {
        if at_ns <= self.walked_ns {
            return;
        }
        let dt = (at_ns - self.walked_ns) as f64 / NS_PER_SEC as f64;
        self.walked_ns = at_ns;
        let pull = (MEAN_REVERSION_PER_SEC * dt).min(1.0);
        let step = self.sigma * dt.sqrt() * normal(rng);
        self.log_dev =
            (self.log_dev * (1.0 - pull) + step).clamp(-MAX_LOG_DEVIATION, MAX_LOG_DEVIATION);
    }

    /// A fresh (bid, ask) in ticks around the mid; bid ≥ 1 tick, ask > bid.
    fn book(&self, rng: &mut SmallRng) -> (i64, i64) {
        let mid = self.mid_ticks();
        let spread = match self.kind {
            Kind::Stock => ((mid as f64 * 1e-4).round() as i64).max(1) + rng.gen_range(0..=1),
            _ => rng.gen_range(1..=4),
        };
        let bid = (mid - spread / 2).max(1);
        (bid, bid + spread)
    }

    /// A quantity in this instrument's units: shares, or hundredths of a lot for FX.
    fn random_units(&self, rng: &mut SmallRng) -> u64 {
        match self.kind {
            Kind::Stock => SHARE_SIZES[rng.gen_range(0..SHARE_SIZES.len())],
            _ => rng.gen_range(1..=500),
        }
    }

    /// Units → payload quantity: whole shares, or lots with 2 decimals.
    fn qty(&self, units: u64) -> Qty {
        match self.kind {
            Kind::Stock => Qty::Shares(units),
            _ => Qty::Lots(units as f64 / 100.0),
        }
    }

    /// Units → volume units (shares, or currency units: 0.01 lot = 1,000).
    fn volume_of(&self, units: u64) -> u64 {
        match self.kind {
            Kind::Stock => units,
            _ => units * 1_000,
        }
    }

    /// Dollar P&L in cents of `units` bought (`buy`) or sold at `entry`, valued at `exit`.
    fn pnl_cents(&self, buy: bool, units: u64, entry: i64, exit: i64) -> i64 {
        let dir = if buy { 1.0 } else { -1.0 };
        let mut pnl = self.price(exit - entry) * dir * self.volume_of(units) as f64;
        if self.kind == Kind::FxUsdBase {
            pnl /= self.price(exit);
        }
        (pnl * 100.0).round() as i64
    }
}

/// A quantity as the seeds show it: integer shares, or fractional FX lots.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(untagged)]
enum Qty {
    Shares(u64),
    Lots(f64),
}

/// Order lifecycle: new → partially_filled → filled, or new → cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrderStatus {
    New,
    PartiallyFilled,
    Filled,
    Cancelled,
}

impl OrderStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::PartiallyFilled => "partially_filled",
            Self::Filled => "filled",
            Self::Cancelled => "cancelled",
        }
    }
}

/// A prop-firm challenge phase (seed 001 uses ACTIVE and FUNDED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Active,
    Verification,
    Funded,
    Failed,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Verification => "VERIFICATION",
            Self::Funded => "FUNDED",
            Self::Failed => "FAILED",
        }
    }
}

/// An open position of a demo user.
#[derive(Debug, Clone)]
struct Position {
    /// Unique id, printed as `POS_{id}`.
    id: u64,
    /// Index into the instruments.
    sym: usize,
    /// Long (`buy`) or short.
    buy: bool,
    /// Size in instrument units.
    units: u64,
    /// Entry price in ticks.
    entry: i64,
    /// When it was opened (unix ms).
    opened_ms: u64,
}

/// The one order a demo user has working, advanced one step per round.
#[derive(Debug)]
struct WorkingOrder {
    id: String,
    sym: usize,
    buy: bool,
    units: u64,
    /// Limit price in ticks; fills happen here.
    price: i64,
    filled: u64,
    status: OrderStatus,
    /// The position this order closes, or `None` if it opens a new one.
    closes: Option<u64>,
}

/// Running state of one demo user: positions, working order and challenge equity.
#[derive(Debug)]
struct UserBook {
    user_id: u64,
    orders_channel: String,
    positions_channel: String,
    equity_channel: String,
    risk_channel: String,
    challenge_channel: String,
    challenge_id: String,
    phase: Phase,
    /// Equity when the current challenge began; `total_pnl` is measured from it.
    initial: i64,
    /// Cash: starting equity plus realised P&L (cents).
    balance: i64,
    /// Equity reported in the previous round (cents).
    last_equity: i64,
    max_equity: i64,
    /// Simulated UTC day the daily figures belong to.
    day: u64,
    daily_start: i64,
    daily_max: i64,
    daily_min: i64,
    total_trades: u64,
    last_trade_ms: u64,
    last_trade_pnl: i64,
    last_trade_sym: usize,
    positions: Vec<Position>,
    order: Option<WorkingOrder>,
    /// Round-robin cursor over `positions` for `position_update`.
    report_cursor: usize,
}

impl UserBook {
    /// Equity in cents: cash plus every open position marked at its instrument's mid.
    fn equity(&self, insts: &[Instrument]) -> i64 {
        let open: i64 = self
            .positions
            .iter()
            .map(|p| {
                let inst = &insts[p.sym];
                inst.pnl_cents(p.buy, p.units, p.entry, inst.mid_ticks())
            })
            .sum();
        self.balance + open
    }
}

/// The simulated market: deterministic for a given seed, driven by the caller's clock.
#[derive(Debug)]
pub struct DemoMarket {
    rng: SmallRng,
    /// Wall-clock origin (unix ms) of the timestamps: elapsed 0 is this instant.
    start_ms: u64,
    symbols: Vec<String>,
    instruments: Vec<Instrument>,
    users: Vec<UserBook>,
    quotes_per_sec: u32,
    trades_per_sec: u32,
    /// Private round period (ns), 0 when private events are off.
    private_period_ns: u64,
    /// Elapsed time (ns) already covered by previous ticks.
    covered_ns: u64,
    /// Fractional quotes owed, in units of 1/NS_PER_SEC of an event: carries rate
    /// remainders between ticks so long-run counts are exact.
    quote_carry: u128,
    /// Same for trades.
    trade_carry: u128,
    /// When the next `market.status` is due (ns since start).
    next_status_ns: u64,
    /// When the next `signal` is due.
    next_signal_ns: u64,
    /// When the next round of private events is due.
    next_private_ns: u64,
    /// Sequence for trade, order and position ids.
    next_id: u64,
}

impl DemoMarket {
    /// Build the market; timestamps start at the current wall-clock time.
    pub fn new(cfg: DemoConfig) -> Self {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis();
        Self::with_start_ms(cfg, u64::try_from(now_ms).unwrap_or(u64::MAX))
    }

    /// Build the market with an explicit wall-clock origin (unix ms), for reproducible runs.
    pub(crate) fn with_start_ms(cfg: DemoConfig, start_ms: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let count = cfg.symbols.clamp(1, MAX_SYMBOLS);
        let mut symbols = Vec::with_capacity(count);
        let mut instruments = Vec::with_capacity(count);
        for &(name, close, kind) in KNOWN.iter().take(count) {
            let sigma = match kind {
                Kind::Stock => STOCK_SIGMA * rng.gen_range(0.6..1.8),
                _ => FX_SIGMA * rng.gen_range(0.8..1.2),
            };
            instruments.push(Instrument::new(name, kind, close, sigma, &mut rng));
            symbols.push(name.to_string());
        }
        let mut taken: HashSet<String> = symbols.iter().cloned().collect();
        while symbols.len() < count {
            let name = random_ticker(&mut rng, taken.len());
            if !taken.insert(name.clone()) {
                continue;
            }
            // Log-normal closes around $50, like a broad equity universe.
            let close = (50f64.ln() + normal(&mut rng)).exp().clamp(2.0, 900.0);
            let sigma = STOCK_SIGMA * rng.gen_range(0.6..2.5);
            instruments.push(Instrument::new(&name, Kind::Stock, close, sigma, &mut rng));
            symbols.push(name);
        }
        let mut next_id = 1;
        let users = cfg
            .users
            .iter()
            .map(|&u| new_user(u, &instruments, &mut rng, start_ms, &mut next_id))
            .collect();
        let first_signal_ms = rng.gen_range(SIGNAL_GAP_MS.0..SIGNAL_GAP_MS.1);
        Self {
            rng,
            start_ms,
            symbols,
            instruments,
            users,
            quotes_per_sec: cfg.quotes_per_sec,
            trades_per_sec: cfg.trades_per_sec,
            private_period_ns: cfg.private_every_ms.saturating_mul(NS_PER_MS),
            covered_ns: 0,
            quote_carry: 0,
            trade_carry: 0,
            next_status_ns: 0,
            next_signal_ns: first_signal_ms * NS_PER_MS,
            next_private_ns: 0,
            next_id,
        }
    }

    /// The symbol list (for printing / the board).
    pub fn symbols(&self) -> &[String] {
        &self.symbols
    }

    /// Emit everything due between the previous call and `elapsed` (time since start) into
    /// `out`. Quote and trade counts carry fractional remainders, so long-run rates match the
    /// config exactly; after a stall at most 1 s worth is emitted and the rest of the gap is
    /// skipped. An `elapsed` earlier than the previous one emits nothing.
    pub fn tick(&mut self, elapsed: Duration, out: &mut Vec<DemoEvent>) {
        // Capped far beyond any real run (~146 years) so schedule arithmetic cannot overflow.
        let now = u64::try_from(elapsed.as_nanos())
            .unwrap_or(u64::MAX)
            .min(u64::MAX / 4);
        if now < self.covered_ns {
            return;
        }
        let from = self.covered_ns.max(now.saturating_sub(MAX_CATCH_UP_NS));
        self.covered_ns = now;

        self.next_status_ns = catch_up(self.next_status_ns, from, STATUS_PERIOD_NS);
        while self.next_status_ns <= now {
            out.push(market_status(wall_ms(self.start_ms, self.next_status_ns)));
            self.next_status_ns += STATUS_PERIOD_NS;
        }

        self.flow(from, now, out);

        if self.next_signal_ns < from {
            self.next_signal_ns = from + self.rng.gen_range(0..NS_PER_SEC);
        }
        while self.next_signal_ns <= now {
            self.signal(self.next_signal_ns, out);
            let gap_ms = self.rng.gen_range(SIGNAL_GAP_MS.0..SIGNAL_GAP_MS.1);
            self.next_signal_ns += gap_ms * NS_PER_MS;
        }

        if self.private_period_ns > 0 && !self.users.is_empty() {
            self.next_private_ns = catch_up(self.next_private_ns, from, self.private_period_ns);
            while self.next_private_ns <= now {
                let at = self.next_private_ns;
                for user in &mut self.users {
                    private_round(
                        user,
                        &mut self.instruments,
                        &self.symbols,
                        &mut self.rng,
                        &mut self.next_id,
                        at,
                        self.start_ms,
                        out,
                    );
                }
                self.next_private_ns += self.private_period_ns;
            }
        }
    }

    /// Quotes and trades owed for `(from, now]`, interleaved and spread evenly in time.
    fn flow(&mut self, from: u64, now: u64, out: &mut Vec<DemoEvent>) {
        let dt = u128::from(now - from);
        let ns = u128::from(NS_PER_SEC);
        self.quote_carry += u128::from(self.quotes_per_sec) * dt;
        self.trade_carry += u128::from(self.trades_per_sec) * dt;
        let quotes = self.quote_carry / ns;
        let trades = self.trade_carry / ns;
        self.quote_carry %= ns;
        self.trade_carry %= ns;
        let total = quotes + trades;
        let mut trades_done = 0;
        for i in 1..=total {
            // `i * dt / total <= dt`, which fits in u64 because dt does.
            let at = from + u64::try_from(i * dt / total).unwrap_or(0);
            if i * trades / total > trades_done {
                trades_done += 1;
                self.trade(at, out);
            } else {
                self.quote(at, out);
            }
        }
    }

    fn quote(&mut self, at: u64, out: &mut Vec<DemoEvent>) {
        let i = skewed_index(&mut self.rng, self.instruments.len());
        let inst = &mut self.instruments[i];
        inst.walk_to(at, &mut self.rng);
        let (bid, ask) = inst.book(&mut self.rng);
        let mid = inst.mid_ticks();
        let close = inst.prev_close;
        let timestamp = rfc3339(wall_ms(self.start_ms, at));
        let payload = QuotePayload {
            symbol: &self.symbols[i],
            bid: inst.price(bid),
            ask: inst.price(ask),
            spread: inst.price(ask - bid),
            last: inst.price(inst.last_ticks),
            change: inst.price(mid - inst.ticks(close)),
            change_percent: round2((inst.price(mid) / close - 1.0) * 100.0),
            volume: inst.volume,
            timestamp: &timestamp,
        };
        out.push(DemoEvent {
            channel: inst.quotes_channel.clone(),
            event: EV_QUOTE,
            data: encode(&payload),
        });
    }

    fn trade(&mut self, at: u64, out: &mut Vec<DemoEvent>) {
        let i = skewed_index(&mut self.rng, self.instruments.len());
        let inst = &mut self.instruments[i];
        inst.walk_to(at, &mut self.rng);
        let (bid, ask) = inst.book(&mut self.rng);
        let buy = self.rng.gen_bool(0.5);
        // Aggressive orders: buyers lift the ask, sellers hit the bid.
        let price = if buy { ask } else { bid };
        let units = inst.random_units(&mut self.rng);
        inst.last_ticks = price;
        inst.volume = inst.volume.saturating_add(inst.volume_of(units));
        let id = format!("trade-{}", self.next_id);
        self.next_id += 1;
        let timestamp = rfc3339(wall_ms(self.start_ms, at));
        let payload = TradePayload {
            id: &id,
            symbol: &self.symbols[i],
            side: side(buy),
            price: inst.price(price),
            quantity: inst.qty(units),
            status: "filled",
            timestamp: &timestamp,
        };
        out.push(DemoEvent {
            channel: inst.trades_channel.clone(),
            event: EV_TRADE,
            data: encode(&payload),
        });
    }

    fn signal(&mut self, at: u64, out: &mut Vec<DemoEvent>) {
        let rng = &mut self.rng;
        let i = skewed_index(rng, self.instruments.len());
        let inst = &mut self.instruments[i];
        inst.walk_to(at, rng);
        let entry = inst.mid_ticks();
        let buy = rng.gen_bool(0.5);
        let risk = match inst.kind {
            Kind::Stock => rng.gen_range(0.01..0.03),
            _ => rng.gen_range(0.002..0.006),
        };
        let reward = risk * rng.gen_range(1.5..3.0);
        let dir = if buy { 1.0 } else { -1.0 };
        let entry_price = inst.price(entry);
        let timestamp = rfc3339(wall_ms(self.start_ms, at));
        let payload = SignalPayload {
            symbol: &self.symbols[i],
            side: side(buy),
            strength: round2(rng.gen_range(0.5..0.99)),
            confidence: (rng.gen_range(50.0f64..99.0) * 10.0).round() / 10.0,
            model: MODELS[rng.gen_range(0..MODELS.len())],
            entry_price,
            stop_loss: inst.price(inst.ticks(entry_price * (1.0 - dir * risk))),
            take_profit: inst.price(inst.ticks(entry_price * (1.0 + dir * reward))),
            timestamp: &timestamp,
        };
        out.push(DemoEvent {
            channel: inst.signals_channel.clone(),
            event: EV_SIGNAL,
            data: encode(&payload),
        });
    }
}

/// A new demo user: a fresh challenge holding two positions opened earlier today.
fn new_user(
    user_id: u64,
    insts: &[Instrument],
    rng: &mut SmallRng,
    start_ms: u64,
    next_id: &mut u64,
) -> UserBook {
    let mut book = UserBook {
        user_id,
        orders_channel: format!("user.{user_id}.orders"),
        positions_channel: format!("user.{user_id}.positions"),
        equity_channel: format!("user.{user_id}.equity"),
        risk_channel: format!("user.{user_id}.risk"),
        challenge_channel: format!("user.{user_id}.challenge"),
        challenge_id: uuid4(rng),
        phase: Phase::Active,
        initial: START_EQUITY_CENTS,
        balance: START_EQUITY_CENTS,
        last_equity: START_EQUITY_CENTS,
        max_equity: START_EQUITY_CENTS,
        day: start_ms / DAY_MS,
        daily_start: START_EQUITY_CENTS,
        daily_max: START_EQUITY_CENTS,
        daily_min: START_EQUITY_CENTS,
        total_trades: 0,
        last_trade_ms: start_ms,
        last_trade_pnl: 0,
        last_trade_sym: 0,
        positions: Vec::with_capacity(MAX_OPEN_POSITIONS),
        order: None,
        report_cursor: 0,
    };
    for _ in 0..2 {
        let sym = skewed_index(rng, insts.len().min(LIQUID_SYMBOLS));
        if book.positions.iter().any(|p| p.sym == sym) {
            continue;
        }
        let inst = &insts[sym];
        // Entered a little away from today's mid, so P&L is not zero at start.
        let entry = inst.ticks(inst.price(inst.mid_ticks()) * (1.0 + normal(rng) * 0.003));
        let opened_ms = start_ms.saturating_sub(rng.gen_range(60_000..3_600_000));
        book.positions.push(Position {
            id: *next_id,
            sym,
            buy: rng.gen_bool(0.5),
            units: inst.random_units(rng),
            entry,
            opened_ms,
        });
        *next_id += 1;
        book.total_trades += 1;
        book.last_trade_sym = sym;
    }
    // Start the equity stream at the positions' current mark, not at the round number.
    let mark = book.equity(insts);
    book.last_equity = mark;
    book.daily_min = book.daily_min.min(mark);
    book.daily_max = book.daily_max.max(mark);
    book.max_equity = book.max_equity.max(mark);
    book
}

/// One round of private events for `book` at `at` (ns since start): advance the working
/// order, report a position, mark equity to market, sometimes alert or change phase.
#[allow(clippy::too_many_arguments)] // split borrows of `DemoMarket`, kept explicit
fn private_round(
    book: &mut UserBook,
    insts: &mut [Instrument],
    names: &[String],
    rng: &mut SmallRng,
    next_id: &mut u64,
    at: u64,
    start_ms: u64,
    out: &mut Vec<DemoEvent>,
) {
    let at_ms = wall_ms(start_ms, at);
    let ts = rfc3339(at_ms);
    for p in &book.positions {
        insts[p.sym].walk_to(at, rng);
    }

    // 1. The working order takes one step of its lifecycle.
    let order = match book.order.take() {
        Some(mut o) => {
            if o.status == OrderStatus::New && rng.gen_ratio(1, CANCEL_ONE_IN) {
                o.status = OrderStatus::Cancelled;
            } else if o.status == OrderStatus::New && o.units > 1 {
                o.status = OrderStatus::PartiallyFilled;
                o.filled = (o.units * rng.gen_range(30..=70) / 100).clamp(1, o.units - 1);
            } else {
                o.status = OrderStatus::Filled;
                o.filled = o.units;
            }
            o
        }
        None => new_order(book, insts, rng, next_id, at, at_ms),
    };
    let inst = &insts[order.sym];
    let order_payload = OrderPayload {
        order_id: &order.id,
        symbol: &names[order.sym],
        side: side(order.buy),
        status: order.status.as_str(),
        order_type: "limit",
        volume: inst.qty(order.units),
        price: inst.price(order.price),
        filled_qty: inst.qty(order.filled),
        timestamp: &ts,
    };
    out.push(DemoEvent {
        channel: book.orders_channel.clone(),
        event: EV_ORDER,
        data: encode(&order_payload),
    });

    // 2. A fill opens or closes a position; report that one, else the next in turn.
    let fill = order.price;
    // (position, still open, realised P&L in cents)
    let mut report: Option<(Position, bool, i64)> = None;
    if order.status == OrderStatus::Filled {
        let closing = order
            .closes
            .and_then(|id| book.positions.iter().position(|p| p.id == id));
        let pnl = match closing {
            Some(idx) => {
                let p = book.positions.remove(idx);
                let pnl = insts[p.sym].pnl_cents(p.buy, p.units, p.entry, fill);
                report = Some((p, false, pnl));
                pnl
            }
            None => {
                let p = Position {
                    id: *next_id,
                    sym: order.sym,
                    buy: order.buy,
                    units: order.units,
                    entry: fill,
                    opened_ms: at_ms,
                };
                *next_id += 1;
                book.positions.push(p.clone());
                report = Some((p, true, 0));
                0
            }
        };
        book.balance += pnl;
        book.total_trades += 1;
        book.last_trade_ms = at_ms;
        book.last_trade_pnl = pnl;
        book.last_trade_sym = order.sym;
    } else if order.status != OrderStatus::Cancelled {
        book.order = Some(order);
    }
    if report.is_none() && !book.positions.is_empty() {
        book.report_cursor = (book.report_cursor + 1) % book.positions.len();
        report = Some((book.positions[book.report_cursor].clone(), true, 0));
    }
    if let Some((p, open, realized)) = report {
        let inst = &insts[p.sym];
        let current = if open { inst.mid_ticks() } else { fill };
        let unrealized = if open {
            inst.pnl_cents(p.buy, p.units, p.entry, current)
        } else {
            0
        };
        let payload = PositionPayload {
            position_id: &format!("POS_{}", p.id),
            symbol: &names[p.sym],
            side: side(p.buy),
            quantity: inst.qty(p.units),
            entry_price: inst.price(p.entry),
            current_price: inst.price(current),
            unrealized_pnl: unrealized as f64 / 100.0,
            realized_pnl: realized as f64 / 100.0,
            status: if open { "open" } else { "closed" },
            opened_at: &rfc3339(p.opened_ms),
            timestamp: &ts,
        };
        out.push(DemoEvent {
            channel: book.positions_channel.clone(),
            event: EV_POSITION,
            data: encode(&payload),
        });
    }

    // 3. Equity marked to market: cash plus every open position at the mid.
    let equity = book.equity(insts);
    let day = at_ms / DAY_MS;
    if day != book.day {
        book.day = day;
        book.daily_start = book.last_equity;
        book.daily_max = book.last_equity;
        book.daily_min = book.last_equity;
    }
    let previous = book.last_equity;
    book.last_equity = equity;
    book.max_equity = book.max_equity.max(equity);
    book.daily_max = book.daily_max.max(equity);
    book.daily_min = book.daily_min.min(equity);
    let payload = EquityPayload {
        challenge_id: &book.challenge_id,
        user_id: book.user_id,
        previous_equity: money(previous),
        current_equity: money(equity),
        max_equity_ever: money(book.max_equity),
        daily_start_equity: money(book.daily_start),
        daily_max_equity: money(book.daily_max),
        daily_min_equity: money(book.daily_min),
        total_pnl: money(equity - book.initial),
        total_trades: book.total_trades,
        last_trade_at: rfc3339(book.last_trade_ms),
        trade_pnl: money(book.last_trade_pnl),
        trade_symbol: &names[book.last_trade_sym],
        executed_at: &ts,
    };
    out.push(DemoEvent {
        channel: book.equity_channel.clone(),
        event: EV_EQUITY,
        data: encode(&payload),
    });

    // 4. Sometimes a risk alert about the drawdown the equity stream shows.
    if rng.gen_ratio(1, RISK_ALERT_ONE_IN) {
        out.push(risk_alert(book, equity, rng.gen_bool(0.5), &ts));
    }

    // 5. Rarely the challenge changes phase, judged by its P&L.
    if rng.gen_ratio(1, CHALLENGE_CHANGE_ONE_IN) {
        let winning = equity >= book.initial;
        let (new, reason) = match book.phase {
            Phase::Active if winning => (Phase::Verification, "PROFIT_TARGET"),
            Phase::Verification if winning => (Phase::Funded, "PROFIT_TARGET"),
            Phase::Active | Phase::Verification => (Phase::Failed, "MAX_DRAWDOWN"),
            Phase::Funded => (Phase::Active, "NEW_CHALLENGE"),
            Phase::Failed => (Phase::Active, "RETRY"),
        };
        let payload = ChallengePayload {
            challenge_id: &book.challenge_id,
            user_id: book.user_id,
            old_status: book.phase.as_str(),
            new_status: new.as_str(),
            reason,
            changed_at: &ts,
        };
        out.push(DemoEvent {
            channel: book.challenge_channel.clone(),
            event: EV_CHALLENGE,
            data: encode(&payload),
        });
        book.phase = new;
        if new == Phase::Active {
            // A new challenge starts from the account as it stands now.
            book.challenge_id = uuid4(rng);
            book.initial = equity;
            book.max_equity = equity;
        }
    }
}

/// A user's next order: it closes the oldest position when the book is full (or one time in
/// three), else opens a new one; limit price at the current mid.
fn new_order(
    book: &UserBook,
    insts: &mut [Instrument],
    rng: &mut SmallRng,
    next_id: &mut u64,
    at: u64,
    at_ms: u64,
) -> WorkingOrder {
    let id = format!("ORD_{}_{}", at_ms / 1000, *next_id);
    *next_id += 1;
    let closing = book.positions.len() >= MAX_OPEN_POSITIONS
        || (!book.positions.is_empty() && rng.gen_ratio(1, 3));
    let pick = skewed_index(rng, insts.len().min(LIQUID_SYMBOLS));
    // Close the oldest position, or the one already held in the picked symbol (no hedging).
    let target = match book.positions.first() {
        Some(p) if closing => Some(p),
        _ => book.positions.iter().find(|p| p.sym == pick),
    };
    let (sym, buy, units, closes) = match target {
        Some(p) => (p.sym, !p.buy, p.units, Some(p.id)),
        None => (pick, rng.gen_bool(0.5), insts[pick].random_units(rng), None),
    };
    insts[sym].walk_to(at, rng);
    WorkingOrder {
        id,
        sym,
        buy,
        units,
        price: insts[sym].mid_ticks(),
        filled: 0,
        status: OrderStatus::New,
        closes,
    }
}

/// A `risk_alert` (seed 001 RISK_ALERT) on the daily drawdown or the drawdown from the
/// equity peak, with the real figures of the equity stream.
fn risk_alert(book: &UserBook, equity: i64, daily: bool, ts: &str) -> DemoEvent {
    let (alert_type, subject, label, base, limit) = if daily {
        (
            "HIGH_DAILY_DRAWDOWN",
            "Daily Drawdown",
            "Daily drawdown",
            book.daily_start,
            DAILY_DRAWDOWN_LIMIT,
        )
    } else {
        (
            "HIGH_TOTAL_DRAWDOWN",
            "Total Drawdown",
            "Drawdown from peak",
            book.max_equity,
            TOTAL_DRAWDOWN_LIMIT,
        )
    };
    let drawdown = if base > 0 {
        ((base - equity) as f64 / base as f64 * 100.0).max(0.0)
    } else {
        0.0
    };
    let ratio = drawdown / limit;
    // The title agrees with the severity: only a HIGH alert says "High ... Warning".
    let (severity, title) = if ratio >= 0.8 {
        ("HIGH", format!("High {subject} Warning"))
    } else if ratio >= 0.5 {
        ("MEDIUM", format!("{subject} Warning"))
    } else {
        ("LOW", format!("{subject} Notice"))
    };
    let payload = RiskPayload {
        challenge_id: &book.challenge_id,
        user_id: book.user_id,
        alert_type,
        severity,
        title: &title,
        message: &format!("{label} at {drawdown:.2}% (limit: {limit:.2}%)"),
        current_equity: money(equity),
        daily_start_equity: money(book.daily_start),
        drawdown_percentage: format!("{drawdown:.2}"),
        threshold_percentage: format!("{limit:.2}"),
        alert_timestamp: ts,
    };
    DemoEvent {
        channel: book.risk_channel.clone(),
        event: EV_RISK,
        data: encode(&payload),
    }
}

/// US equity session times in UTC (standard time; DST and holidays ignored in the demo).
const PRE_MARKET_MS: u64 = 9 * 3_600_000;
const OPEN_MS: u64 = 14 * 3_600_000 + 30 * 60_000;
const CLOSE_MS: u64 = 21 * 3_600_000;

/// Monday to Friday, counting days since 1970-01-01 (a Thursday).
fn is_weekday(day: u64) -> bool {
    matches!((day + 4) % 7, 1..=5)
}

/// (session, is_open, next_open, next_close) at `unix_ms`.
fn market_session(unix_ms: u64) -> (&'static str, bool, Option<u64>, Option<u64>) {
    let day = unix_ms / DAY_MS;
    let time = unix_ms % DAY_MS;
    let session = match time {
        _ if !is_weekday(day) => "closed",
        t if t < PRE_MARKET_MS => "closed",
        t if t < OPEN_MS => "pre_market",
        t if t < CLOSE_MS => "regular",
        _ => "after_hours",
    };
    if session == "regular" {
        return (session, true, None, Some(day * DAY_MS + CLOSE_MS));
    }
    let next_open = (day..day + 8)
        .filter(|&d| is_weekday(d))
        .map(|d| d * DAY_MS + OPEN_MS)
        .find(|&open| open > unix_ms);
    (session, false, next_open, None)
}

/// The `market.status` event at `unix_ms` (seed 002's `market:status`, snake_cased).
fn market_status(unix_ms: u64) -> DemoEvent {
    let (session, is_open, next_open, next_close) = market_session(unix_ms);
    let payload = StatusPayload {
        is_open,
        session,
        next_open: next_open.map(rfc3339),
        next_close: next_close.map(rfc3339),
        timestamp: rfc3339(unix_ms),
    };
    DemoEvent {
        channel: String::from("market.status"),
        event: EV_MARKET_STATUS,
        data: encode(&payload),
    }
}

#[derive(Serialize)]
struct QuotePayload<'a> {
    symbol: &'a str,
    bid: f64,
    ask: f64,
    spread: f64,
    last: f64,
    change: f64,
    change_percent: f64,
    volume: u64,
    timestamp: &'a str,
}

#[derive(Serialize)]
struct TradePayload<'a> {
    id: &'a str,
    symbol: &'a str,
    side: &'a str,
    price: f64,
    quantity: Qty,
    status: &'a str,
    timestamp: &'a str,
}

#[derive(Serialize)]
struct SignalPayload<'a> {
    symbol: &'a str,
    side: &'a str,
    strength: f64,
    confidence: f64,
    model: &'a str,
    entry_price: f64,
    stop_loss: f64,
    take_profit: f64,
    timestamp: &'a str,
}

#[derive(Serialize)]
struct StatusPayload {
    is_open: bool,
    session: &'static str,
    next_open: Option<String>,
    next_close: Option<String>,
    timestamp: String,
}

#[derive(Serialize)]
struct OrderPayload<'a> {
    order_id: &'a str,
    symbol: &'a str,
    side: &'a str,
    status: &'a str,
    order_type: &'a str,
    volume: Qty,
    price: f64,
    filled_qty: Qty,
    timestamp: &'a str,
}

#[derive(Serialize)]
struct PositionPayload<'a> {
    position_id: &'a str,
    symbol: &'a str,
    side: &'a str,
    quantity: Qty,
    entry_price: f64,
    current_price: f64,
    unrealized_pnl: f64,
    realized_pnl: f64,
    status: &'a str,
    opened_at: &'a str,
    timestamp: &'a str,
}

/// Seed 001 EQUITY_UPDATED; money as strings with 2 decimals.
#[derive(Serialize)]
struct EquityPayload<'a> {
    challenge_id: &'a str,
    user_id: u64,
    previous_equity: String,
    current_equity: String,
    max_equity_ever: String,
    daily_start_equity: String,
    daily_max_equity: String,
    daily_min_equity: String,
    total_pnl: String,
    total_trades: u64,
    last_trade_at: String,
    trade_pnl: String,
    trade_symbol: &'a str,
    executed_at: &'a str,
}

/// Seed 001 RISK_ALERT.
#[derive(Serialize)]
struct RiskPayload<'a> {
    challenge_id: &'a str,
    user_id: u64,
    alert_type: &'a str,
    severity: &'a str,
    title: &'a str,
    message: &'a str,
    current_equity: String,
    daily_start_equity: String,
    drawdown_percentage: String,
    threshold_percentage: String,
    alert_timestamp: &'a str,
}

/// Seed 001 CHALLENGE_STATUS_CHANGED, plus `user_id` like its siblings.
#[derive(Serialize)]
struct ChallengePayload<'a> {
    challenge_id: &'a str,
    user_id: u64,
    old_status: &'a str,
    new_status: &'a str,
    reason: &'a str,
    changed_at: &'a str,
}

/// Wall-clock unix ms of `at_ns` since the origin `start_ms`.
fn wall_ms(start_ms: u64, at_ns: u64) -> u64 {
    start_ms.saturating_add(at_ns / NS_PER_MS)
}

/// Serialize a payload struct to compact JSON.
fn encode<T: Serialize>(payload: &T) -> String {
    // Invariant: payloads are structs of strings, numbers, bools and options, which
    // serde_json cannot fail to serialize (it fails only on non-string map keys or a failing
    // custom `Serialize`). `{}` is a harmless fallback should that ever change.
    serde_json::to_string(payload).unwrap_or_else(|_| String::from("{}"))
}

fn side(buy: bool) -> &'static str {
    if buy {
        "buy"
    } else {
        "sell"
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Cents → "1234.56" / "-0.05", the seed's money format.
fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// Unix ms → `YYYY-MM-DDTHH:MM:SS.mmmZ` (days → civil date after H. Hinnant's algorithm).
fn rfc3339(unix_ms: u64) -> String {
    let days = unix_ms / DAY_MS;
    let ms_of_day = unix_ms % DAY_MS;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000
    )
}

/// The first instant of a `period` schedule at or after `from`, skipping what a stalled
/// caller missed. `period` must be non-zero.
fn catch_up(due: u64, from: u64, period: u64) -> u64 {
    if due >= from {
        due
    } else {
        due + (from - due).div_ceil(period) * period
    }
}

/// A standard normal sample (Box–Muller); `1 - u` keeps the logarithm finite.
fn normal(rng: &mut SmallRng) -> f64 {
    let u1 = 1.0 - rng.gen::<f64>();
    let u2 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// An index in `0..n` (`n >= 1`) skewed to the front: density ∝ 1/√i, so the first symbols
/// are hot (AAPL ≈ 6 % of 300 symbols' traffic) and the tail is quiet, like a real feed.
fn skewed_index(rng: &mut SmallRng, n: usize) -> usize {
    let u = rng.gen::<f64>();
    ((u * u * n as f64) as usize).min(n.saturating_sub(1))
}

/// A random 3–4 letter ticker (4–5 once many are taken, so there is always room).
fn random_ticker(rng: &mut SmallRng, taken: usize) -> String {
    let len = if taken < 50_000 {
        rng.gen_range(3..=4)
    } else {
        rng.gen_range(4..=5)
    };
    (0..len)
        .map(|_| char::from(b'A' + rng.gen_range(0..26u8)))
        .collect()
}

/// A random RFC 4122 version-4 UUID string, for challenge ids.
fn uuid4(rng: &mut SmallRng) -> String {
    let mut b: [u8; 16] = rng.gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};
    use std::collections::HashMap;

    /// 2025-01-15T12:00:00Z, a Wednesday in pre-market.
    const ORIGIN_MS: u64 = 1_736_942_400_000;

    fn market(cfg: DemoConfig) -> DemoMarket {
        DemoMarket::with_start_ms(cfg, ORIGIN_MS)
    }

    /// Tick every `step_ms` up to `secs` seconds; returns all events.
    fn run(m: &mut DemoMarket, secs: u64, step_ms: u64) -> Vec<DemoEvent> {
        let mut out = Vec::new();
        let mut t = 0;
        while t <= secs * 1000 {
            m.tick(Duration::from_millis(t), &mut out);
            t += step_ms;
        }
        out
    }

    fn count(events: &[DemoEvent], event: &str) -> usize {
        events.iter().filter(|e| e.event == event).count()
    }

    fn object(e: &DemoEvent) -> Map<String, Value> {
        match serde_json::from_str::<Value>(&e.data) {
            Ok(Value::Object(map)) => map,
            other => panic!("{} data is not a JSON object: {other:?}", e.event),
        }
    }

    fn valid_channel(c: &str) -> bool {
        let chars = c
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-@=#".contains(&b));
        (1..=128).contains(&c.len()) && chars && c.split('.').all(|s| !s.is_empty())
    }

    fn valid_event(e: &str) -> bool {
        (1..=64).contains(&e.len())
            && e.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    }

    fn fields(event: &str) -> &'static [&'static str] {
        match event {
            EV_QUOTE => &[
                "symbol",
                "bid",
                "ask",
                "spread",
                "last",
                "change",
                "change_percent",
                "volume",
                "timestamp",
            ],
            EV_TRADE => &["id", "symbol", "side", "price", "quantity", "timestamp"],
            EV_MARKET_STATUS => &["is_open", "session", "next_open", "next_close", "timestamp"],
            EV_SIGNAL => &[
                "symbol",
                "side",
                "strength",
                "confidence",
                "model",
                "entry_price",
                "stop_loss",
                "take_profit",
            ],
            EV_ORDER => &[
                "order_id",
                "symbol",
                "side",
                "status",
                "volume",
                "price",
                "filled_qty",
                "timestamp",
            ],
            EV_POSITION => &[
                "position_id",
                "symbol",
                "side",
                "quantity",
                "entry_price",
                "current_price",
                "unrealized_pnl",
            ],
            EV_EQUITY => &[
                "challenge_id",
                "user_id",
                "previous_equity",
                "current_equity",
                "max_equity_ever",
                "daily_start_equity",
                "daily_max_equity",
                "daily_min_equity",
                "total_pnl",
                "total_trades",
                "last_trade_at",
                "trade_pnl",
                "trade_symbol",
                "executed_at",
            ],
            EV_RISK => &[
                "challenge_id",
                "user_id",
                "alert_type",
                "severity",
                "title",
                "message",
                "current_equity",
                "daily_start_equity",
                "drawdown_percentage",
                "threshold_percentage",
                "alert_timestamp",
            ],
            EV_CHALLENGE => &[
                "challenge_id",
                "old_status",
                "new_status",
                "reason",
                "changed_at",
            ],
            other => panic!("unexpected event {other}"),
        }
    }

    fn is_money(v: &Value) -> bool {
        v.as_str().is_some_and(|s| {
            let digits = s.strip_prefix('-').unwrap_or(s);
            matches!(digits.split_once('.'), Some((i, f)) if !i.is_empty() && f.len() == 2
                && i.bytes().chain(f.bytes()).all(|b| b.is_ascii_digit()))
        })
    }

    #[test]
    fn same_seed_same_events_other_seed_differs() {
        let a = run(&mut market(DemoConfig::default()), 5, 10);
        let b = run(&mut market(DemoConfig::default()), 5, 10);
        assert!(a.len() > 10_000);
        assert_eq!(a, b);
        let cfg = DemoConfig {
            seed: 7,
            ..DemoConfig::default()
        };
        let mut c = market(cfg);
        assert_ne!(a, run(&mut c, 5, 10));
        assert_eq!(c.symbols().len(), 300);
    }

    #[test]
    fn rates_match_config_over_ten_seconds() {
        let cfg = DemoConfig {
            quotes_per_sec: 1234,
            trades_per_sec: 77,
            ..DemoConfig::default()
        };
        let mut m = market(cfg);
        let mut out = Vec::new();
        // Irregular 7–13 ms ticks, as a real timer delivers them.
        let mut t = 0;
        while t < 10_000 {
            t = (t + 7 + t % 7).min(10_000);
            m.tick(Duration::from_millis(t), &mut out);
        }
        let quotes = count(&out, EV_QUOTE) as f64;
        let trades = count(&out, EV_TRADE) as f64;
        assert!((quotes / 12_340.0 - 1.0).abs() < 0.01, "quotes {quotes}");
        assert!((trades / 770.0 - 1.0).abs() < 0.01, "trades {trades}");
        let signals = count(&out, EV_SIGNAL);
        assert!((6..=20).contains(&signals), "signals {signals}");
        // Private rounds at 0, 2, 4, 6, 8, 10 s for each of three users.
        assert_eq!(count(&out, EV_EQUITY), 18);
        assert_eq!(count(&out, EV_ORDER), 18);
        assert_eq!(count(&out, EV_MARKET_STATUS), 1);
    }

    #[test]
    fn fractional_rates_carry_between_ticks() {
        // 3 quotes/s at 10 ms ticks is 0.03 per tick: only the carry makes any appear.
        let cfg = DemoConfig {
            quotes_per_sec: 3,
            trades_per_sec: 1,
            ..DemoConfig::default()
        };
        let out = run(&mut market(cfg), 100, 10);
        assert_eq!(count(&out, EV_QUOTE), 300);
        assert_eq!(count(&out, EV_TRADE), 100);
    }

    #[test]
    fn a_thirty_second_stall_emits_at_most_one_second() {
        let mut m = market(DemoConfig::default());
        let mut out = Vec::new();
        m.tick(Duration::ZERO, &mut out);
        out.clear();
        m.tick(Duration::from_secs(30), &mut out);
        assert!(count(&out, EV_QUOTE) <= 2000, "{}", count(&out, EV_QUOTE));
        assert!(count(&out, EV_QUOTE) >= 1999);
        assert!(count(&out, EV_TRADE) <= 200);
        assert!(count(&out, EV_SIGNAL) <= 3);
        assert!(count(&out, EV_EQUITY) <= 3, "one round per user at most");
        assert!(count(&out, EV_MARKET_STATUS) <= 1);
        // Time going backwards emits nothing; time resumes normally afterwards.
        out.clear();
        m.tick(Duration::from_secs(29), &mut out);
        assert!(out.is_empty());
        m.tick(Duration::from_millis(30_010), &mut out);
        assert!((15..=25).contains(&count(&out, EV_QUOTE)));
    }

    #[test]
    fn every_event_is_a_json_object_with_its_fields_and_valid_names() {
        let cfg = DemoConfig {
            private_every_ms: 100,
            ..DemoConfig::default()
        };
        let out = run(&mut market(cfg), 35, 10);
        let mut seen = HashMap::new();
        for e in &out {
            assert!(valid_channel(&e.channel), "bad channel {}", e.channel);
            assert!(valid_event(e.event), "bad event {}", e.event);
            let obj = object(e);
            for f in fields(e.event) {
                assert!(obj.contains_key(*f), "{} lacks {f}: {}", e.event, e.data);
            }
            *seen.entry(e.event).or_insert(0) += 1;
            match e.event {
                EV_QUOTE => {
                    let bid = obj["bid"].as_f64().unwrap_or(0.0);
                    let ask = obj["ask"].as_f64().unwrap_or(0.0);
                    assert!(bid > 0.0 && ask > bid, "{}", e.data);
                    assert_eq!(
                        e.channel,
                        format!("quotes.{}", obj["symbol"].as_str().unwrap_or(""))
                    );
                }
                EV_EQUITY => {
                    for f in [
                        "previous_equity",
                        "current_equity",
                        "total_pnl",
                        "trade_pnl",
                    ] {
                        assert!(is_money(&obj[f]), "{f} in {}", e.data);
                    }
                }
                EV_RISK => assert!(is_money(&obj["current_equity"]), "{}", e.data),
                EV_MARKET_STATUS => {
                    assert_eq!(e.channel, "market.status");
                    assert!(obj["next_open"].is_string() != obj["next_close"].is_string());
                }
                _ => {}
            }
        }
        assert_eq!(seen.len(), 9, "{seen:?}");
        assert_eq!(seen[EV_MARKET_STATUS], 2, "at 0 s and 30 s");
        // Sample payloads, for eyeballing with `cargo test -- --nocapture`.
        for kind in [
            EV_QUOTE,
            EV_TRADE,
            EV_SIGNAL,
            EV_ORDER,
            EV_POSITION,
            EV_EQUITY,
            EV_RISK,
        ] {
            if let Some(e) = out.iter().find(|e| e.event == kind) {
                println!("{} {} {}", e.channel, e.event, e.data);
            }
        }
    }

    #[test]
    fn decimals_match_instrument_kind() {
        let m = market(DemoConfig::default());
        let out = run(&mut market(DemoConfig::default()), 3, 10);
        for e in out.iter().filter(|e| e.event == EV_QUOTE) {
            let obj = object(e);
            let sym = obj["symbol"].as_str().unwrap_or("");
            let decimals = match sym {
                "USDJPY" => 3,
                s if s.len() == 6 && s.contains("USD") => 5,
                _ => 2,
            };
            for f in ["bid", "ask", "spread"] {
                let text = obj[f].to_string();
                let d = text.split_once('.').map_or(0, |(_, frac)| frac.len());
                assert!(d <= decimals, "{sym} {f} = {text}");
            }
        }
        assert!(m.symbols().iter().any(|s| s == "EURUSD"));
        assert!(m
            .symbols()
            .iter()
            .all(|s| valid_channel(&format!("quotes.{s}"))));
    }

    #[test]
    fn symbols_are_unique_and_clamped() {
        let m = market(DemoConfig {
            symbols: 5000,
            ..DemoConfig::default()
        });
        let set: HashSet<&String> = m.symbols().iter().collect();
        assert_eq!(set.len(), 5000);
        assert_eq!(
            market(DemoConfig {
                symbols: 0,
                ..DemoConfig::default()
            })
            .symbols()
            .len(),
            1
        );
    }

    #[test]
    fn prices_stay_positive_over_a_long_walk() {
        let mut rng = SmallRng::seed_from_u64(1);
        // A penny stock with five times the usual volatility, and EURUSD, walked a simulated
        // year in 100 s steps.
        let mut insts = [
            Instrument::new("PENY", Kind::Stock, 0.05, STOCK_SIGMA * 5.0, &mut rng),
            Instrument::new("EURUSD", Kind::FxUsdQuote, 1.085, FX_SIGMA, &mut rng),
        ];
        for step in 1..=315_360u64 {
            for inst in &mut insts {
                inst.walk_to(step * 100 * NS_PER_SEC, &mut rng);
                let (bid, ask) = inst.book(&mut rng);
                assert!(bid >= 1 && ask > bid);
            }
        }
        // And through the public API: ten minutes of events, one tick a second.
        let cfg = DemoConfig {
            symbols: 20,
            quotes_per_sec: 200,
            ..DemoConfig::default()
        };
        let mut m = market(cfg);
        let mut out = Vec::new();
        for s in 0..600 {
            m.tick(Duration::from_secs(s), &mut out);
            for e in out.drain(..) {
                let obj = object(&e);
                for f in [
                    "bid",
                    "ask",
                    "price",
                    "entry_price",
                    "stop_loss",
                    "current_price",
                ] {
                    if let Some(v) = obj.get(f) {
                        assert!(v.as_f64().is_some_and(|p| p > 0.0), "{f}: {}", e.data);
                    }
                }
            }
        }
    }

    #[test]
    fn every_user_gets_every_private_event_kind() {
        let cfg = DemoConfig {
            quotes_per_sec: 50,
            trades_per_sec: 5,
            private_every_ms: 100,
            ..DemoConfig::default()
        };
        let out = run(&mut market(cfg), 100, 50);
        for u in [42, 43, 44] {
            for (suffix, event) in [
                ("orders", EV_ORDER),
                ("positions", EV_POSITION),
                ("equity", EV_EQUITY),
                ("risk", EV_RISK),
                ("challenge", EV_CHALLENGE),
            ] {
                let channel = format!("user.{u}.{suffix}");
                assert!(
                    out.iter().any(|e| e.channel == channel && e.event == event),
                    "{channel} never got {event}"
                );
            }
            let statuses: HashSet<String> = out
                .iter()
                .filter(|e| e.channel == format!("user.{u}.orders"))
                .filter_map(|e| object(e)["status"].as_str().map(str::to_string))
                .collect();
            assert_eq!(statuses.len(), 4, "user {u}: {statuses:?}");
        }
    }

    #[test]
    fn equity_is_consistent_round_to_round() {
        let cfg = DemoConfig {
            private_every_ms: 100,
            ..DemoConfig::default()
        };
        let out = run(&mut market(cfg), 60, 10);
        let mut last: HashMap<String, (String, u64)> = HashMap::new();
        for e in out.iter().filter(|e| e.event == EV_EQUITY) {
            let obj = object(e);
            let cents = |f: &str| -> i64 {
                let s = obj[f].as_str().unwrap_or("x");
                s.replace('.', "").parse().unwrap_or(i64::MIN)
            };
            let cur = cents("current_equity");
            assert!(cents("daily_min_equity") <= cur && cur <= cents("daily_max_equity"));
            assert!(cur <= cents("max_equity_ever"));
            let trades = obj["total_trades"].as_u64().unwrap_or(0);
            if let Some((prev, prev_trades)) = last.get(&e.channel) {
                assert_eq!(&obj["previous_equity"].as_str().unwrap_or(""), prev);
                assert!(trades >= *prev_trades);
            }
            let prev = obj["current_equity"].as_str().unwrap_or("").to_string();
            last.insert(e.channel.clone(), (prev, trades));
        }
        assert_eq!(last.len(), 3);
    }

    #[test]
    fn private_events_can_be_turned_off() {
        let cfg = DemoConfig {
            private_every_ms: 0,
            ..DemoConfig::default()
        };
        let out = run(&mut market(cfg), 5, 10);
        assert!(out.iter().all(|e| !e.channel.starts_with("user.")));
    }

    #[test]
    fn formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(ORIGIN_MS + 123), "2025-01-15T12:00:00.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(money(1_020_000), "10200.00");
        assert_eq!(money(-5), "-0.05");
        assert_eq!(money(0), "0.00");
        let mut rng = SmallRng::seed_from_u64(3);
        let id = uuid4(&mut rng);
        assert_eq!((id.len(), &id[14..15]), (36, "4"));
    }

    #[test]
    fn market_sessions_follow_the_us_calendar() {
        // Wednesday 12:00 UTC: pre-market, opens 14:30 the same day.
        let (session, open, next_open, next_close) = market_session(ORIGIN_MS);
        assert_eq!((session, open, next_close), ("pre_market", false, None));
        assert_eq!(
            next_open.map(rfc3339).as_deref(),
            Some("2025-01-15T14:30:00.000Z")
        );
        // Wednesday 15:00 UTC: regular, closes 21:00.
        let (session, open, _, next_close) = market_session(ORIGIN_MS + 3 * 3_600_000);
        assert_eq!((session, open), ("regular", true));
        assert_eq!(
            next_close.map(rfc3339).as_deref(),
            Some("2025-01-15T21:00:00.000Z")
        );
        // Saturday: closed until Monday.
        let (session, _, next_open, _) = market_session(ORIGIN_MS + 3 * DAY_MS);
        assert_eq!(session, "closed");
        assert_eq!(
            next_open.map(rfc3339).as_deref(),
            Some("2025-01-20T14:30:00.000Z")
        );
    }
}
