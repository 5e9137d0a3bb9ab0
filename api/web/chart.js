// The chart page: a symbol's bars from /v1/bars (every page), candles and volume drawn by
// lightweight-charts, then live minute bars from the WebSocket folded into the last candle.
// The API key comes from the URL fragment (#key=..., never sent to the server in the URL),
// else from this browser's storage, else from a prompt.
(function () {
  "use strict";
  const status = document.getElementById("status");
  const symbol = status.dataset.symbol;
  const interval = status.dataset.interval;
  const INTERVALS = ["1d", "3d", "5d", "8d", "13d", "21d", "34d"];
  const state = { bars: 0, live: 0, error: null };
  window.chartState = state;

  function show(text) {
    status.textContent = text;
    status.dataset.bars = String(state.bars);
    status.dataset.live = String(state.live);
    status.dataset.subscribed = String(Boolean(state.subscribed));
    if (state.error) status.dataset.error = state.error;
  }

  function apiKey() {
    const m = /(?:^|[#&])key=([^&]+)/.exec(location.hash);
    if (m) {
      const key = decodeURIComponent(m[1]);
      sessionStorage.setItem("condvest-key", key);
      history.replaceState(null, "", location.pathname + location.search);
      return key;
    }
    return sessionStorage.getItem("condvest-key") || window.prompt("API key (X-API-Key)") || "";
  }

  const nav = document.getElementById("intervals");
  for (const i of INTERVALS) {
    const a = document.createElement("a");
    a.href = "?interval=" + i;
    a.textContent = i;
    if (i === interval) a.className = "on";
    nav.appendChild(a);
    nav.appendChild(document.createTextNode(" "));
  }

  const LC = window.LightweightCharts;
  const chart = LC.createChart(document.getElementById("chart"), {
    autoSize: true,
    layout: { background: { color: "#0f1115" }, textColor: "#d8dde6" },
    grid: { vertLines: { color: "#1e222b" }, horzLines: { color: "#1e222b" } },
    timeScale: { borderColor: "#2a2f3a" },
  });
  const candles = chart.addSeries(LC.CandlestickSeries, {
    upColor: "#26a69a", downColor: "#ef5350", wickUpColor: "#26a69a",
    wickDownColor: "#ef5350", borderVisible: false,
  });
  const volume = chart.addSeries(LC.HistogramSeries, {
    priceScaleId: "", priceFormat: { type: "volume" }, color: "#3b4252",
  });
  volume.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
  candles.priceScale().applyOptions({ scaleMargins: { top: 0.08, bottom: 0.25 } });

  const key = apiKey();
  const headers = { "X-API-Key": key, Accept: "application/json" };
  let last = null;            // the last candle drawn
  const minuteVolume = {};    // live minute bars folded into the last candle, by minute start

  function candle(b) {
    return { time: b.date || b.start_date, open: b.open, high: b.high, low: b.low, close: b.close };
  }

  async function load() {
    let url = "/v1/bars/" + encodeURIComponent(symbol) + "?interval=" + interval;
    const rows = [];
    while (url) {
      const r = await fetch(url, { headers });
      const body = await r.json();
      if (!r.ok) throw new Error(body.detail || r.statusText);
      rows.push(...body.bars);
      url = body.next;
    }
    candles.setData(rows.map(candle));
    volume.setData(rows.map((b) => ({
      time: candle(b).time, value: b.volume,
      color: b.close >= b.open ? "#26a69a80" : "#ef535080",
    })));
    chart.timeScale().fitContent();
    state.bars = candles.data().length;
    if (rows.length) last = { ...candle(rows[rows.length - 1]), volume: rows[rows.length - 1].volume };
    show(state.bars + " bars");
  }

  function sessionDate(iso) {
    return new Date(iso).toLocaleDateString("en-CA", { timeZone: "America/New_York" });
  }

  function fold(bar) {
    // A live minute bar: it extends the last candle, or starts a new daily one.
    const day = sessionDate(bar.start || bar.updated_at || Date.now());
    if (!last || (interval === "1d" && day > last.time)) {
      last = { time: day, open: bar.open, high: bar.high, low: bar.low, close: bar.close, volume: 0 };
      for (const k of Object.keys(minuteVolume)) delete minuteVolume[k];
    } else {
      last = { ...last, high: Math.max(last.high, bar.high), low: Math.min(last.low, bar.low),
               close: bar.close };
    }
    const before = Object.values(minuteVolume).reduce((a, b) => a + b, 0);
    minuteVolume[bar.start || "?"] = bar.volume || 0;
    const added = Object.values(minuteVolume).reduce((a, b) => a + b, 0) - before;
    last.volume = (last.volume || 0) + added;
    candles.update({ time: last.time, open: last.open, high: last.high, low: last.low, close: last.close });
    volume.update({ time: last.time, value: last.volume });
    state.bars = candles.data().length;
    state.live += 1;
    show(state.bars + " bars · live " + new Date().toLocaleTimeString());
  }

  function stream() {
    const proto = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(proto + location.host + "/v1/stream?symbols=" +
      encodeURIComponent(symbol) + "&api_key=" + encodeURIComponent(key));
    ws.onmessage = (ev) => {
      const msg = JSON.parse(ev.data);
      if (msg.type === "subscribed") { state.subscribed = true; show(status.textContent); }
      if (msg.type === "bar" && msg.data) fold(msg.data);
    };
    ws.onclose = (ev) => {
      state.subscribed = false;
      if (ev.code === 1008) { state.error = ev.reason; show("live updates refused: " + ev.reason); return; }
      setTimeout(stream, 3000);  // the server restarted or the network dropped: reconnect
    };
  }

  load().then(stream).catch((e) => { state.error = String(e.message || e); show("error: " + state.error); });
})();
