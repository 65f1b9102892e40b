/**
 * The playground page: forms, charts (echarts) and the routing view. All computation happens in
 * the engine Worker (engine.ts); this thread only sends requests and draws replies.
 */
import * as echarts from 'echarts/core';
import { LineChart, HeatmapChart } from 'echarts/charts';
import { GridComponent, TooltipComponent, LegendComponent, VisualMapComponent } from 'echarts/components';
import { CanvasRenderer } from 'echarts/renderers';
import type { Envelope, ModelInfo, Reply, Request, TrainSettings } from './protocol.js';

echarts.use([LineChart, HeatmapChart, GridComponent, TooltipComponent, LegendComponent, VisualMapComponent, CanvasRenderer]);

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => document.getElementById(id) as T;
const params = new URLSearchParams(location.search);

// ---- engine -----------------------------------------------------------------------------------
const engine = new Worker(new URL('engine.js', import.meta.url), { type: 'module', name: 'moe-ts engine' });
let nextId = 1;
const handlers = new Map<number, (r: Reply) => void>();
function send(req: Request, onReply: (r: Reply) => void, transfer: Transferable[] = []): number {
  const id = nextId++;
  handlers.set(id, onReply);
  engine.postMessage({ ...req, id } as Envelope, transfer);
  return id;
}

// ---- state exposed for tests and the curious ----------------------------------------------------
const state = {
  ready: false,
  backend: '',
  threads: 0,
  isolated: false,
  losses: { moe: [] as [number, number][], dense: [] as [number, number][] },
  trained: null as null | { moeValLoss: number; denseValLoss: number | null; stopped: boolean },
  info: null as ModelInfo | null,
  lastGeneration: null as string | null,
  busy: '' as string,
  errors: [] as string[],
};
(window as unknown as { playground: typeof state }).playground = state;

function setMsg(id: string, text: string, err = false): void {
  const el = $(id);
  el.textContent = text;
  el.classList.toggle('err', err);
  if (err) state.errors.push(text);
}

// ---- charts -------------------------------------------------------------------------------------
const lossChart = echarts.init($('loss-chart'));
lossChart.setOption({
  animation: false,
  grid: { left: 44, right: 12, top: 28, bottom: 28 },
  legend: { top: 0, data: ['MoE', 'dense (same FLOPs)'] },
  tooltip: { trigger: 'axis' },
  xAxis: { type: 'value', name: 'step', nameLocation: 'middle', nameGap: 20, min: 0 },
  yAxis: { type: 'value', name: 'loss', scale: true },
  series: [
    { name: 'MoE', type: 'line', showSymbol: false, data: [] },
    { name: 'dense (same FLOPs)', type: 'line', showSymbol: false, data: [] },
  ],
});
function heatmap(el: HTMLElement): echarts.ECharts {
  const c = echarts.init(el);
  c.setOption({
    animation: false,
    grid: { left: 60, right: 60, top: 6, bottom: 24 },
    tooltip: { formatter: (p: { value: [number, number, number] }) => `layer ${p.value[1]}, expert ${p.value[0]}: ${(p.value[2] * 100).toFixed(1)}%` },
    xAxis: { type: 'category', data: [], name: 'expert', nameLocation: 'middle', nameGap: 18 },
    yAxis: { type: 'category', data: [] },
    visualMap: { min: 0, max: 1, calculable: false, orient: 'vertical', right: 0, top: 'middle', itemHeight: 80, inRange: { color: ['#f4f7fb', '#3b6fd8', '#14306b'] } },
    series: [{ type: 'heatmap', data: [] }],
  });
  return c;
}
const loadChart = heatmap($('load-chart'));
const usageChart = heatmap($('usage-chart'));
function drawHeat(c: echarts.ECharts, rows: { layer: number; counts: number[] }[]): void {
  const E = rows[0]?.counts.length ?? 0;
  const data: [number, number, number][] = [];
  let max = 0;
  rows.forEach((r, y) => {
    const total = r.counts.reduce((a, b) => a + b, 0) || 1;
    r.counts.forEach((v, e) => {
      data.push([e, y, v / total]);
      max = Math.max(max, v / total);
    });
  });
  c.setOption({
    xAxis: { data: Array.from({ length: E }, (_, e) => String(e)) },
    yAxis: { data: rows.map((r) => `layer ${r.layer}`) },
    visualMap: { max: Math.max(max, 1e-6) },
    series: [{ data }],
  });
}
window.addEventListener('resize', () => [lossChart, loadChart, usageChart].forEach((c) => c.resize()));

// ---- engine start -------------------------------------------------------------------------------
const buttons = ['train-btn', 'route-btn', 'gen-btn'];
function setBusy(what: string): void {
  state.busy = what;
  for (const b of buttons) ($(b) as HTMLButtonElement).disabled = !state.ready || (what !== '' && b !== 'route-btn' && b !== 'gen-btn') || (what !== '' && what !== 'train');
  ($('stop-btn') as HTMLButtonElement).disabled = what !== 'train';
}
engine.onmessage = (e: MessageEvent<Reply>) => {
  const r = e.data;
  if (r.type === 'ready') {
    Object.assign(state, { ready: true, backend: r.backend, threads: r.threads, isolated: r.isolated });
    const sel = $<HTMLSelectElement>('router');
    for (const { name, description } of r.routers) {
      const o = document.createElement('option');
      o.value = name;
      o.textContent = name;
      o.title = description;
      if (name === 'topk') o.selected = true;
      sel.append(o);
    }
    $('status').textContent =
      `${r.backend} backend · ${r.threads} thread${r.threads === 1 ? '' : 's'}${r.relaxed ? ' · relaxed SIMD' : ''} · ${r.isolated ? 'cross-origin isolated' : 'not isolated (single thread)'}`;
    setBusy('');
    return;
  }
  if (r.type === 'step') return onStep(r);
  const h = handlers.get(r.id);
  if (h) h(r);
};
engine.onerror = (e) => {
  $('status').textContent = `engine failed: ${e.message}`;
  $('status').classList.add('err');
  state.errors.push(`engine: ${e.message}`);
};
const threadsParam = params.get('threads');
const backendParam = params.get('backend');
engine.postMessage({
  type: 'init',
  id: 0,
  ...(threadsParam ? { threads: Number(threadsParam) } : {}),
  ...(backendParam === 'js' || backendParam === 'wasm' ? { backend: backendParam } : {}),
} as Envelope);

// ---- training -----------------------------------------------------------------------------------
let ownText: string | null = null;
let ownName = 'pasted text';
$<HTMLInputElement>('text-file').addEventListener('change', async (ev) => {
  const f = (ev.target as HTMLInputElement).files?.[0];
  if (!f) return;
  const bytes = new Uint8Array(await f.arrayBuffer());
  try {
    ownText = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    ownName = f.name;
    $<HTMLTextAreaElement>('text-own').value = ownText.slice(0, 2000);
    $<HTMLInputElement>('train-form').querySelector<HTMLInputElement>('input[value=own]')!.checked = true;
    setMsg('train-status', `${f.name}: ${ownText.length} characters`);
  } catch {
    ownText = null;
    setMsg('train-status', `${f.name} is not UTF-8 text`, true);
  }
});
$<HTMLTextAreaElement>('text-own').addEventListener('input', () => {
  ownText = null;
  ownName = 'pasted text';
});

function onStep(r: Extract<Reply, { type: 'step' }>): void {
  state.losses[r.which].push([r.step, r.loss]);
  if (r.which === 'moe') {
    $('tps-moe').textContent = String(Math.round(r.tokensPerSec));
    $('cv').textContent = r.loadCV.toFixed(3);
    $<HTMLProgressElement>('train-progress').value = r.step / r.steps;
    setMsg('train-status', `step ${r.step} / ${r.steps} · loss ${r.loss.toFixed(3)}`);
    if (r.loads.length)
      drawHeat(
        loadChart,
        r.loads.map((l) => ({ layer: l.layer, counts: l.tokensPerExpert })),
      );
  } else $('tps-dense').textContent = String(Math.round(r.tokensPerSec));
  scheduleLossDraw();
}
let drawPending = false;
function scheduleLossDraw(): void {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    lossChart.setOption({ series: [{ data: state.losses.moe }, { data: state.losses.dense }] });
  });
}

$('train-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target as HTMLFormElement);
  const num = (k: string): number => Number(f.get(k));
  const settings: TrainSettings = {
    router: String(f.get('router')),
    numExperts: num('numExperts'),
    topK: num('topK'),
    expertWidth: num('expertWidth'),
    activation: f.get('activation') === 'gelu' ? 'gelu' : 'silu',
    layers: num('layers'),
    hidden: num('hidden'),
    steps: num('steps'),
    lr: num('lr'),
    batchSize: num('batchSize'),
    seqLen: num('seqLen'),
    seed: num('seed'),
    dense: f.get('dense') === 'on',
  };
  let text: string | null = null;
  if (f.get('source') === 'own') {
    text = ownText ?? $<HTMLTextAreaElement>('text-own').value;
    if (!text.trim()) return setMsg('train-status', 'paste some text or pick a file first', true);
  }
  state.losses = { moe: [], dense: [] };
  state.trained = null;
  scheduleLossDraw();
  setBusy('train');
  setMsg('train-status', 'starting');
  send({ type: 'train', settings, text, textName: ownName }, (r) => {
    if (r.type === 'progress') setMsg('train-status', r.message);
    else if (r.type === 'trained') {
      state.trained = { moeValLoss: r.moeValLoss, denseValLoss: r.denseValLoss, stopped: r.stopped };
      showInfo(r.info);
      const d = r.denseValLoss;
      setMsg(
        'train-status',
        `${r.stopped ? 'stopped' : 'done'} at step ${r.info.step}: validation loss MoE ${r.moeValLoss.toFixed(3)}${d !== null ? `, dense ${d.toFixed(3)} (${r.moeValLoss < d ? 'MoE is ahead' : 'dense is ahead'})` : ''}`,
      );
      setBusy('');
      ($('download-btn') as HTMLButtonElement).disabled = false;
    } else if (r.type === 'error') {
      setMsg('train-status', r.message, true);
      setBusy('');
    }
  });
});
$('stop-btn').addEventListener('click', () => send({ type: 'stop' }, () => {}));

function showInfo(info: ModelInfo): void {
  state.info = info;
  $('model-info').textContent =
    `model: ${info.source}, step ${info.step}; ${info.layers} layers, ${info.numExperts} experts (k = ${info.topK}, router ${info.router}); ${info.params.toLocaleString()} parameters, ${info.activeParams.toLocaleString()} active per token${info.denseParams ? `; dense baseline ${info.denseParams.toLocaleString()}` : ''}`;
}

// ---- routing view -------------------------------------------------------------------------------
const colour = (e: number, E: number): string => `hsl(${Math.round((e * 360) / Math.max(E, 1))}, 70%, 78%)`;
const dark = (e: number, E: number): string => `hsl(${Math.round((e * 360) / Math.max(E, 1))}, 65%, 42%)`;
const tip = $('tip');
$('route-btn').addEventListener('click', () => {
  setMsg('route-status', 'routing…');
  send({ type: 'route', text: $<HTMLTextAreaElement>('route-text').value }, (r) => {
    if (r.type === 'error') return setMsg('route-status', r.message, true);
    if (r.type !== 'routing') return;
    const E = r.numExperts;
    const legend = $('legend');
    legend.replaceChildren(
      ...Array.from({ length: E }, (_, e) => {
        const s = document.createElement('span');
        s.textContent = `expert ${e}`;
        s.style.background = colour(e, E);
        return s;
      }),
    );
    const root = $('routing');
    root.replaceChildren();
    for (const l of r.layers) {
      const row = document.createElement('div');
      row.className = 'layer';
      row.dataset.layer = String(l.layer);
      const name = document.createElement('span');
      name.className = 'layer-name';
      name.textContent = `layer ${l.layer}`;
      row.append(name);
      for (const t of l.tokens) {
        const s = document.createElement('span');
        s.className = 'tok';
        s.textContent = t.text === '\n' ? '⏎' : t.text;
        const first = t.experts[0];
        if (first !== undefined) {
          s.style.background = colour(first, E);
          s.dataset.expert = String(first);
        }
        if (t.experts[1] !== undefined) s.style.borderBottomColor = dark(t.experts[1], E);
        s.dataset.tip =
          `${JSON.stringify(t.text)} layer ${l.layer}\n` +
          t.probs.map((p, e) => `expert ${e}: ${(p * 100).toFixed(1).padStart(5)}%${t.experts.includes(e) ? ` ← weight ${t.weights[t.experts.indexOf(e)].toFixed(2)}` : ''}`).join('\n');
        row.append(s);
      }
      root.append(row);
    }
    drawHeat(
      usageChart,
      r.layers.map((l) => {
        const counts = new Array<number>(E).fill(0);
        for (const t of l.tokens) for (const e of t.experts) counts[e]++;
        return { layer: l.layer, counts };
      }),
    );
    setMsg('route-status', `${r.layers[0]?.tokens.length ?? 0} tokens${r.truncated ? " (cut to the model's context)" : ''}`);
  });
});
$('routing').addEventListener('mousemove', (ev) => {
  const t = (ev.target as HTMLElement).closest<HTMLElement>('.tok');
  if (!t) return void (tip.hidden = true);
  tip.textContent = t.dataset.tip ?? '';
  tip.hidden = false;
  tip.style.left = `${Math.min(ev.clientX + 12, innerWidth - 260)}px`;
  tip.style.top = `${ev.clientY + 14}px`;
});
$('routing').addEventListener('mouseleave', () => (tip.hidden = true));

// ---- generation ---------------------------------------------------------------------------------
$('gen-btn').addEventListener('click', () => {
  const out = $('gen-out');
  const prompt = $<HTMLInputElement>('gen-prompt').value;
  out.textContent = prompt;
  state.lastGeneration = null;
  setMsg('gen-status', 'generating…');
  ($('gen-btn') as HTMLButtonElement).disabled = true;
  send(
    {
      type: 'generate',
      prompt,
      maxNewTokens: Number($<HTMLInputElement>('gen-tokens').value),
      temperature: Number($<HTMLInputElement>('gen-temp').value),
      topP: Number($<HTMLInputElement>('gen-topp').value),
      seed: Number($<HTMLInputElement>('gen-seed').value),
      which: $<HTMLSelectElement>('gen-which').value === 'dense' ? 'dense' : 'moe',
    },
    (r) => {
      if (r.type === 'gen-piece') out.textContent += r.text;
      else if (r.type === 'gen-done') {
        state.lastGeneration = r.text;
        setMsg('gen-status', `${Math.round(r.tokensPerSec)} tokens/s${r.note ? ` · ${r.note}` : ''}`);
        ($('gen-btn') as HTMLButtonElement).disabled = false;
      } else if (r.type === 'error') {
        setMsg('gen-status', r.message, true);
        ($('gen-btn') as HTMLButtonElement).disabled = false;
      }
    },
  );
});

// ---- checkpoints --------------------------------------------------------------------------------
async function loadFiles(files: { path: string; file: File }[]): Promise<void> {
  if (files.length === 0) return;
  setMsg('ckpt-status', `reading ${files.length} file(s)…`);
  // a run directory's optimizer moments are not needed for inference
  const wanted = files.filter((f) => !f.path.endsWith('optimizer.safetensors'));
  const payload = await Promise.all(wanted.map(async (f) => ({ path: f.path, bytes: await f.file.arrayBuffer() })));
  send(
    { type: 'load', files: payload },
    (r) => {
      if (r.type === 'progress') setMsg('ckpt-status', r.message);
      else if (r.type === 'loaded') {
        showInfo(r.info);
        setMsg('ckpt-status', `loaded (step ${r.info.step})`);
        ($('download-btn') as HTMLButtonElement).disabled = true;
      } else if (r.type === 'error') setMsg('ckpt-status', r.message, true);
    },
    payload.map((p) => p.bytes),
  );
}
$<HTMLInputElement>('ckpt-file').addEventListener('change', (ev) => {
  const list = [...((ev.target as HTMLInputElement).files ?? [])];
  void loadFiles(list.map((file) => ({ path: file.webkitRelativePath || file.name, file })));
});
const drop = $('drop');
drop.addEventListener('dragover', (ev) => {
  ev.preventDefault();
  drop.classList.add('over');
});
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (ev) => {
  ev.preventDefault();
  drop.classList.remove('over');
  const items = [...(ev.dataTransfer?.items ?? [])].map((i) => i.webkitGetAsEntry()).filter((x): x is FileSystemEntry => x !== null);
  void collect(items).then(loadFiles, (e: Error) => setMsg('ckpt-status', e.message, true));
});
/** Files of dropped entries, directories walked (a whole run directory can be dropped). */
async function collect(entries: FileSystemEntry[]): Promise<{ path: string; file: File }[]> {
  const out: { path: string; file: File }[] = [];
  const walk = async (e: FileSystemEntry): Promise<void> => {
    if (e.isFile) {
      const file = await new Promise<File>((res, rej) => (e as FileSystemFileEntry).file(res, rej));
      out.push({ path: e.fullPath, file });
    } else if (e.isDirectory) {
      const reader = (e as FileSystemDirectoryEntry).createReader();
      for (;;) {
        const batch = await new Promise<FileSystemEntry[]>((res, rej) => reader.readEntries(res, rej));
        if (batch.length === 0) break;
        for (const c of batch) await walk(c);
      }
    }
  };
  for (const e of entries) await walk(e);
  return out;
}
$('download-btn').addEventListener('click', () => {
  setMsg('ckpt-status', 'preparing the download…');
  send({ type: 'download' }, (r) => {
    if (r.type === 'error') return setMsg('ckpt-status', r.message, true);
    if (r.type !== 'download') return;
    const url = URL.createObjectURL(new Blob([r.bytes], { type: 'application/octet-stream' }));
    const a = document.createElement('a');
    a.href = url;
    a.download = r.name;
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
    setMsg('ckpt-status', `${r.name} (${(r.bytes.byteLength / 1e6).toFixed(2)} MB): load it with moe-ts generate --ckpt ${r.name}`);
  });
});
