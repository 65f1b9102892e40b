/** Training progress: a live bar on a terminal, periodic plain lines otherwise (CI, pipes). */
import cliProgress from 'cli-progress';
import type { StepMetrics, EvalRecord } from '../train/trainer.js';

export interface Progress {
  start(total: number, startStep: number): void;
  step(m: StepMetrics): void;
  eval(r: EvalRecord): void;
  message(line: string): void;
  stop(): void;
}

function fmt(x: number, digits = 3): string {
  return Number.isFinite(x) ? x.toFixed(digits) : String(x);
}

export function createProgress(stream: NodeJS.WriteStream = process.stderr, quiet = false): Progress {
  const tty = Boolean(stream.isTTY) && !quiet;
  let bar: cliProgress.SingleBar | null = null;
  let total = 0;
  let t0 = 0;
  let startStep = 0;
  const lines = (line: string): void => {
    if (!quiet) stream.write(line + '\n');
  };
  return {
    start(n, s) {
      total = n;
      startStep = s;
      t0 = performance.now();
      if (tty) {
        bar = new cliProgress.SingleBar(
          {
            stream,
            format: 'step {value}/{total} [{bar}] loss {loss} | {tps} tok/s | aux {aux} | load cv {cv} | ETA {eta_formatted}',
            barsize: 20,
            hideCursor: true,
            etaBuffer: 20,
          },
          cliProgress.Presets.shades_classic,
        );
        bar.start(n, s, { loss: '-', tps: '-', aux: '-', cv: '-' });
      }
    },
    step(m) {
      const aux = Object.values(m.aux).reduce((a, b) => a + b, 0);
      if (bar) bar.update(m.step, { loss: fmt(m.loss), tps: Math.round(m.tokensPerSec), aux: fmt(aux, 4), cv: fmt(m.loadCV, 2) });
      else {
        const every = Math.max(1, Math.round(total / 20));
        if (m.step % every === 0 || m.step === total) {
          const elapsed = (performance.now() - t0) / 1000;
          const eta = ((total - m.step) * elapsed) / Math.max(1, m.step - startStep);
          lines(`step ${m.step}/${total}  loss ${fmt(m.loss)}  ${Math.round(m.tokensPerSec)} tok/s  aux ${fmt(aux, 4)}  load cv ${fmt(m.loadCV, 2)}  ETA ${Math.round(eta)}s`);
        }
      }
    },
    eval(r) {
      const doms = r.result.domains.map((d) => `${d.domain} ${fmt(d.loss)}`).join(', ');
      const line = `eval @ step ${r.step}: val loss ${fmt(r.result.loss)} (ppl ${fmt(r.result.perplexity, 2)})${r.result.domains.length > 1 ? ` [${doms}]` : ''}`;
      if (bar) {
        bar.stop();
        lines(line);
        bar.start(total, r.step, { loss: '-', tps: '-', aux: '-', cv: '-' });
      } else lines(line);
    },
    message(line) {
      if (bar) {
        bar.stop();
        lines(line);
        bar = null;
      } else lines(line);
    },
    stop() {
      bar?.stop();
      bar = null;
    },
  };
}
